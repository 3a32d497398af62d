"""Alert delivery adapters, one per channel kind (not "channels": that is Django Channels)."""

from __future__ import annotations

from django.conf import settings

from oversight.notifiers.base import Notifier, NotifyError
from oversight.notifiers.console import ConsoleNotifier
from oversight.notifiers.email import EmailNotifier
from oversight.notifiers.webhook import WebhookNotifier

__all__ = ("Notifier", "NotifyError", "notifier_for")


def notifier_for(channel: str) -> Notifier:
    """The notifier of a Notification.channel: "console", "email" or "webhook:<name>"."""
    if channel == "console":
        return ConsoleNotifier()
    if channel == "email":
        return EmailNotifier()
    kind, _, name = channel.partition(":")
    if kind == "webhook":
        if (url := settings.ALERT_WEBHOOKS.get(name)) is None:
            # Removed from ALERT_WEBHOOKS since the alert was raised: nowhere to send it.
            raise NotifyError(f"no webhook {name!r} in ALERT_WEBHOOKS", permanent=True)
        return WebhookNotifier(name=name, url=url, secret=settings.ALERT_WEBHOOK_SECRET)
    raise NotifyError(f"unknown channel {channel!r}", permanent=True)
