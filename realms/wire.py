"""The signed wire between realms (DESIGN.md section 8): every request and every push is
signed with HTTP Message Signatures (RFC 9421, Ed25519) covering the method, the target URI
and the content digest, with `created`, an `expires` at most REALM_SIGNATURE_SECONDS later
and a nonce. The receiver refuses a replayed nonce through Redis and fails closed: when
Redis cannot say whether the nonce is new, the request is refused.

http-message-signatures does the RFC (the signature base, the structured fields, the
digest); cryptography does Ed25519. This module only chooses what is covered and checks the
parameters the library leaves to the caller (expiry bound, nonce, replay)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import redis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.conf import settings
from http_message_signatures import (
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from common.redis import redis_client
from common.refusals import Refused
from realms.identity import me

COVERED = ("@method", "@target-uri", "content-digest")
_clients: dict[int, httpx.Client] = {}


def http() -> httpx.Client:
    """This process's HTTP client for peers: one per process (a worker's pool processes are
    forked), kept, so that a call reuses its connection and skips building a TLS context,
    which httpx.post() does anew each time (tens of milliseconds)."""
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = httpx.Client(follow_redirects=False, trust_env=False)
    return _clients[pid]


TAG = "loopstacks-federation"


def rpc(base_url: str, method: str, params: dict[str, Any], *, rid: str, timeout) -> Any:
    """One signed JSON-RPC request to the realm at `base_url`, answered at once: the
    response as it came (an httpx error if none came; the caller reads status and body)."""
    url = f"{base_url}/a2a"
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = {**signed_headers("POST", url, raw), "A2A-Version": "1.0"}
    return http().post(url, content=raw, headers=headers, timeout=timeout)


@dataclass
class Message:
    """The request as the library reads it: an upper-case method, the absolute URL signed
    for, and the headers (a dict the signer adds Signature, Signature-Input and
    Content-Digest to)."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, lookup: Callable[[str], Ed25519PublicKey | None] | None = None):
        self.lookup = lookup

    def resolve_private_key(self, key_id: str):
        if key_id != me().fingerprint:
            raise KeyError(key_id)
        return me().key

    def resolve_public_key(self, key_id: str):
        return self.lookup(key_id) if self.lookup else None


def signed_headers(method: str, url: str, body: bytes) -> dict[str, str]:
    """The headers that sign a request of ours to `url` with this realm's key."""
    message = Message(method.upper(), url, {"Content-Type": "application/json"})
    now = datetime.now(UTC)
    HTTPMessageSigner(signature_algorithm=algorithms.ED25519, key_resolver=_Keys()).sign(
        message,
        key_id=me().fingerprint,
        created=now,
        expires=now + timedelta(seconds=settings.REALM_SIGNATURE_SECONDS),
        nonce=secrets.token_urlsafe(18),
        tag=TAG,
        covered_component_ids=COVERED,
        body=body,
    )
    return message.headers


def key_id_of(headers: dict[str, str]) -> str:
    """The keyid a request claims (unverified: it only says which key to verify with)."""
    from http_sf import parse  # http-message-signatures' structured-field parser

    raw = {k.lower(): v for k, v in headers.items()}.get("signature-input", "")
    try:
        inputs: Any = parse(raw.encode(), tltype="dictionary")
    except ValueError:
        return ""
    for value in inputs.values():
        keyid = value[1].get("keyid") if isinstance(value, tuple) else None
        if isinstance(keyid, str):
            return keyid
    return ""


def verify(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    key_for: Callable[[str], Ed25519PublicKey | None],
) -> str:
    """The keyid of a request whose signature holds, or Refused(401, bad_signature) naming
    what does not: no or a bad signature, an unknown key, a digest that does not match the
    body, a lifetime over the bound, no nonce, a nonce seen before, or Redis unreachable."""
    message = Message(method.upper(), url, headers)
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519, key_resolver=_Keys(key_for)
    )
    try:
        [result] = verifier.verify(
            message,
            max_age=timedelta(seconds=settings.REALM_SIGNATURE_SECONDS),
            expect_tag=TAG,
            require_components=COVERED,
            body=body,
        )
    except (InvalidSignature, ValueError) as exc:
        raise Refused(
            401,
            "bad_signature",
            f"the request's signature does not hold: {exc or 'it does not match'}",
        ) from None
    params = result.parameters
    created, expires = params.get("created"), params.get("expires")
    if not isinstance(created, int) or not isinstance(expires, int):
        raise Refused(401, "bad_signature", "the signature needs `created` and `expires`")
    if expires - created > settings.REALM_SIGNATURE_SECONDS:
        raise Refused(
            401,
            "bad_signature",
            f"the signature's lifetime is over {settings.REALM_SIGNATURE_SECONDS} s",
        )
    if not result.nonce:
        raise Refused(401, "bad_signature", "the signature has no nonce")
    keyid = str(params["keyid"])
    _refuse_replay(keyid, str(result.nonce))
    return keyid


def _refuse_replay(keyid: str, nonce: str) -> None:
    """Each (key, nonce) once: remembered a little longer than a signature lives."""
    ttl = settings.REALM_SIGNATURE_SECONDS * 2
    try:
        fresh = redis_client().set(f"realms:nonce:{keyid}:{nonce}", 1, nx=True, ex=ttl)
    except redis.RedisError:
        raise Refused(
            503, "replay_check_unavailable", "cannot check the nonce for a replay; try again"
        ) from None
    if not fresh:
        raise Refused(401, "replayed", "this signature's nonce was seen before: a replay")
