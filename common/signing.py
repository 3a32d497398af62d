"""The one request-signing scheme: outgoing webhooks, calls to remote agents, and agents'
calls to the API, under the same shared secret both ways.

The receiver gets X-Console-Timestamp (Unix seconds) and X-Console-Signature, "v1=" + hex
HMAC-SHA256 with the shared secret of f"{timestamp}.{raw body}", and rejects signatures that
do not match or timestamps too far from its own clock (replays). Imports no app.

Agents calling the API. A request made with an agent's token (Authorization: Bearer) must
carry both headers too, signed with the agent's secret: its config's "secret", or the
environment variable its "secret_env" names (shared_secret), the secret this console signs
its own calls to that agent with. The body signed is the exact bytes sent ("" for a GET or an
empty POST). The console answers 401 {"error": …, "detail": …} naming the problem when a
header is missing, the signature does not match, the timestamp is more than 300 s
(MAX_AGE_SECONDS) before or after the console's clock, the agent has no secret configured,
or the same signature was already accepted: each signature is accepted once, so two requests
with the same body need different timestamps (wait a second, or sign the next second). The
signature covers the timestamp and body, not the method or path.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Mapping
from typing import Any

TIMESTAMP_HEADER = "X-Console-Timestamp"
SIGNATURE_HEADER = "X-Console-Signature"
MAX_AGE_SECONDS = 300  # how far a timestamp may be from the receiver's clock, either way


class SignatureRejected(Exception):
    """A signed request the receiver refuses: a short code and a sentence for the sender."""

    def __init__(self, code: str, detail: str) -> None:
        self.code, self.detail = code, detail
        super().__init__(detail)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    signed = timestamp.encode() + b"." + body
    return "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, *, now: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(
    secret: str, timestamp: str, body: bytes, given: str, *, max_age_s: float = MAX_AGE_SECONDS
) -> bool:
    """What a receiver does: a matching signature on a recent timestamp."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    return age <= max_age_s and hmac.compare_digest(signature(secret, timestamp, body), given)


def check(
    secret: str, timestamp: str | None, body: bytes, given: str | None, *, now: float | None = None
) -> int:
    """verify(), saying what is wrong: raise SignatureRejected, or return the timestamp.

    The signature is checked before the clock, so that only the secret's holder learns
    whether a timestamp is in the window.
    """
    if not timestamp or not given:
        missing = " and ".join(
            name
            for name, value in ((TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, given))
            if not value
        )
        raise SignatureRejected(
            "signature_missing",
            f"The request is not signed: {missing} missing (see common.signing).",
        )
    try:
        at = int(timestamp)
    except ValueError:
        raise SignatureRejected(
            "timestamp_invalid",
            f"{TIMESTAMP_HEADER} must be whole Unix seconds, not {timestamp[:40]!r}.",
        ) from None
    expected = signature(secret, timestamp, body).encode()
    if not hmac.compare_digest(expected, given.encode("utf-8", "replace")):
        raise SignatureRejected(
            "signature_invalid",
            f'{SIGNATURE_HEADER} does not match: sign "<timestamp>.<raw body>" with HMAC-SHA256 '
            'under the agent\'s shared secret, as "v1=<hex>".',
        )
    skew = at - int(time.time() if now is None else now)
    if skew < -MAX_AGE_SECONDS:
        raise SignatureRejected(
            "timestamp_expired",
            f"{TIMESTAMP_HEADER} is {-skew} s old; the console accepts {MAX_AGE_SECONDS} s "
            "either way.",
        )
    if skew > MAX_AGE_SECONDS:
        raise SignatureRejected(
            "timestamp_in_future",
            f"{TIMESTAMP_HEADER} is {skew} s ahead of the console's clock; the console accepts "
            f"{MAX_AGE_SECONDS} s either way.",
        )
    return at


def shared_secret(config: Mapping[str, Any]) -> str:
    """An agent's shared secret from its config: "secret", or the environment variable
    "secret_env" names, read now ("" when neither gives one)."""
    secret_env = str(config.get("secret_env") or "")
    return str(config.get("secret") or (os.environ.get(secret_env, "") if secret_env else ""))
