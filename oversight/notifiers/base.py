"""What every notifier is: one way to deliver an alert (healthchecks' Transport shape)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from oversight.models import Alert


class NotifyError(Exception):
    """A delivery failed. Permanent ones (a 4xx answer, a channel no longer configured) are
    not retried; the others are, with backoff, up to NOTIFICATION_MAX_ATTEMPTS."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent


class Notifier(Protocol):
    def send(self, alert: Alert) -> None:
        """Deliver the alert or raise NotifyError. Called outside any transaction, because
        it may take its whole timeout."""
