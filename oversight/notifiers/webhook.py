"""The webhook channel: a signed JSON POST that Slack-compatible receivers can show as is.

The body carries a one-line `text` (what Slack's incoming webhooks display) and the alert
itself. The receiver checks X-Console-Signature, "v1=" + hex HMAC-SHA256 with the shared
secret of f"{X-Console-Timestamp}.{raw body}", and rejects old timestamps (replays).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from common.signing import signature as webhook_signature
from oversight.models import Alert
from oversight.notifiers.base import NotifyError

TIMEOUT_SECONDS = 5.0
TEXT_LIMIT = 1000


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would re-send the signed body elsewhere, as a GET."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def webhook_text(alert: Alert) -> str:
    """One line: [LEVEL] title — body, with Slack's three escapes (&, <, >)."""
    line = f"[{alert.level.upper()}] {' '.join(alert.title.split())}"
    if body := " ".join(alert.body.split()):
        line += f" — {body}"
    if len(line) > TEXT_LIMIT:
        line = line[: TEXT_LIMIT - 1] + "…"
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(alert: Alert) -> dict[str, Any]:
    target = {"type": alert.target_type, "id": alert.target_id} if alert.target_type else None
    return {
        "text": webhook_text(alert),
        "alert": {
            "id": alert.pk,
            "kind": alert.kind,
            "level": alert.level,
            "title": alert.title,
            "body": alert.body,
            "target": target,
            "data": alert.data,
            "created_at": alert.created_at.isoformat(),
        },
    }


def _is_permanent(status: int) -> bool:
    # Timeouts and rate limits pass; other refusals will not change by asking again.
    return status < 500 and status not in (408, 429)


@dataclass(frozen=True)
class WebhookNotifier:
    name: str
    url: str
    secret: str

    def send(self, alert: Alert) -> None:
        body = json.dumps(webhook_payload(alert), cls=DjangoJSONEncoder).encode()
        timestamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 — settings allow only http(s) URLs
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "loop-stack-console",
                "X-Console-Timestamp": timestamp,
                "X-Console-Signature": webhook_signature(self.secret, timestamp, body),
            },
        )
        try:
            with _opener.open(request, timeout=TIMEOUT_SECONDS) as response:
                response.read(4096)
        except urllib.error.HTTPError as exc:
            exc.close()
            permanent = _is_permanent(exc.code)
            raise NotifyError(f"webhook {self.name}: HTTP {exc.code}", permanent) from exc
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, timeout
            reason = getattr(exc, "reason", exc)
            raise NotifyError(f"webhook {self.name}: {reason}") from exc
