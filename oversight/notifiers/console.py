"""The console channel: the alert appears live on every open console."""

from __future__ import annotations

from common.push import CONSOLE_GROUP, push_html
from oversight import fragments
from oversight.models import Alert
from oversight.notifiers.base import NotifyError


class ConsoleNotifier:
    def send(self, alert: Alert) -> None:
        if alert.acknowledged_at is not None:
            return  # acknowledged before this late delivery: it would reappear in every feed
        html = fragments.alert(alert)
        try:
            push_html(CONSOLE_GROUP, html)
        except Exception as exc:  # Redis down or refusing: the channel layer's own errors vary
            raise NotifyError(f"console push failed: {type(exc).__name__}: {exc}") from exc
