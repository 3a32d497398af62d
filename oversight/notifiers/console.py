"""The console channel: the alert appears live on every open console."""

from __future__ import annotations

from django.template.loader import render_to_string

from console.push import CONSOLE_GROUP, push_html
from oversight.models import Alert
from oversight.notifiers.base import NotifyError

# The one template of an alert, rendered the same for a page and a push (STYLE.md B.7).
ALERT = "oversight/_alert.html"


def alert_fragment(alert: Alert) -> str:
    """The alert as pushed: no request, the same for every viewer."""
    return render_to_string(ALERT, {"alert": alert, "oob": True})


class ConsoleNotifier:
    def send(self, alert: Alert) -> None:
        html = alert_fragment(alert)
        try:
            push_html(CONSOLE_GROUP, html)
        except Exception as exc:  # Redis down or refusing: the channel layer's own errors vary
            raise NotifyError(f"console push failed: {type(exc).__name__}: {exc}") from exc
