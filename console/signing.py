"""The one request-signing scheme, shared by outgoing webhooks and calls to remote agents.

The receiver gets X-Console-Timestamp (Unix seconds) and X-Console-Signature, "v1=" + hex
HMAC-SHA256 with the shared secret of f"{timestamp}.{raw body}", and rejects signatures that
do not match or timestamps too far from its own clock (replays). Imports no app.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TIMESTAMP_HEADER = "X-Console-Timestamp"
SIGNATURE_HEADER = "X-Console-Signature"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    signed = timestamp.encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secret: str, timestamp: str, body: bytes, given: str, *, max_age_s: float = 300) -> bool:
    """What a receiver does: a matching signature on a recent timestamp."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(signature(secret, timestamp, body), given)
