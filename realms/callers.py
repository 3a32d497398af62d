"""Who calls this realm's wire (DESIGN.md section 8), failing closed: a peer realm by its
signed request (RFC 9421, realms.wire), or a client peer by its bearer token. Only an
approved peer is heard; a pairing request is the one call from a key not yet known, and it
must be signed by the key it carries."""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings

from common.refusals import Refused
from realms import wire
from realms.cards import CardInfo
from realms.identity import public_key_from
from realms.models import Peer

PAIR = "loopstacks/Pair"
# Answers to our own pairing request: heard from a known key, whatever the pairing's state.
PAIRING_ANSWERS = ("loopstacks/PairApproved", "loopstacks/PairRefused")
MAX_PENDING = 100  # pairing requests waiting for this realm's admins


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def caller(
    method: str, path: str, headers: dict[str, str], body: bytes, data: dict
) -> Peer | CardInfo:
    """The approved peer behind a request; for a pairing request, the realm it describes."""
    lowered = {k.lower(): v for k, v in headers.items()}
    url = f"{settings.REALM_URL}{path}"
    if "signature-input" in lowered:
        keyid = wire.key_id_of(headers)
        if data.get("method") == PAIR:
            params = data.get("params")
            card = CardInfo.from_message(params.get("realm") if isinstance(params, dict) else None)
            if card.fingerprint != keyid:
                raise Refused(
                    401, "bad_signature", "a pairing request is signed by the key it carries"
                )
            key = public_key_from(card.public_key)
            wire.verify(method, url, headers, body, lambda kid: key if kid == keyid else None)
            if (
                Peer.objects.filter(status=Peer.Status.PENDING, we_approved=False).count()
                >= MAX_PENDING
            ):
                raise Refused(429, "too_many_requests", "too many pairing requests wait here")
            return card
        peer = Peer.objects.filter(fingerprint=keyid, kind=Peer.Kind.REALM).first()
        if peer is None:
            raise Refused(401, "unknown_key", f"no peer realm here has the key {keyid or '(none)'}")
        key = public_key_from(peer.public_key)
        wire.verify(method, url, headers, body, lambda kid: key if kid == keyid else None)
        if data.get("method") in PAIRING_ANSWERS:
            return peer
    elif (auth := lowered.get("authorization", "")).lower().startswith("bearer "):
        digest = token_hash(auth[7:].strip())
        peer = Peer.objects.filter(kind=Peer.Kind.CLIENT, token_hash=digest).first()
        if peer is None:
            raise Refused(401, "unknown_token", "this token belongs to no client peer")
    else:
        raise Refused(
            401, "unauthenticated", "sign the request (RFC 9421) or send a client peer's token"
        )
    if not peer.paired:
        raise Refused(403, "not_paired", f"realm {peer.slug} is {peer.status}, not approved here")
    return peer


def push_task(data: dict[str, Any]) -> dict[str, Any]:
    task = data.get("task")
    if not isinstance(task, dict):
        raise Refused(400, "invalid_request", 'a push carries {"task": {...}}')
    return task
