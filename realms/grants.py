"""Grants (DESIGN.md section 8, default deny): what one direction of a pairing allows. A
leaf helper over realms.models: the engine asks it before a call leaves, the A2A endpoint
when one arrives; each answer is a refusal's reason, or "" when the grant allows the call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from fnmatch import fnmatchcase

from django.utils import timezone

from realms.models import Grant, Incoming, Outgoing, Peer


@dataclass(frozen=True)
class Ask:
    """What a call asks for: the blueprint, the frames it may add and the budget it spends."""

    blueprint: str
    depth: int  # frames the call may still add below it (the caller's bound minus its depth)
    budget: float | None  # None: unbounded (the callee caps it with its grant's budget)


def grant_of(peer: Peer, direction: str) -> Grant | None:
    return peer.grants.filter(direction=direction).first()


def refusal(peer: Peer, direction: str, ask: Ask) -> str:
    """Why `peer` may not make (inbound) or receive (outbound) this call; "" if it may."""
    if not peer.paired:
        return f"realm {peer.slug} is {peer.status}, not an approved peer"
    grant = grant_of(peer, direction)
    if grant is None or not grant.blueprints:
        return f"no {direction} grant for realm {peer.slug}"
    if not any(fnmatchcase(ask.blueprint, glob.strip()) for glob in grant.blueprints.split(",")):
        return f"blueprint {ask.blueprint!r} is not in the {direction} grant ({grant.blueprints})"
    if ask.depth < 1:
        return "the call would pass the depth bound"
    if _calls_last_minute(peer, direction) >= grant.rate_per_minute:
        return f"over the grant's rate of {grant.rate_per_minute} calls a minute"
    return ""


def depth_allowed(peer: Peer, direction: str, asked: int) -> int:
    grant = grant_of(peer, direction)
    return min(asked, grant.max_depth) if grant else 0


def _calls_last_minute(peer: Peer, direction: str) -> int:
    since = timezone.now() - timedelta(minutes=1)
    if direction == Grant.Direction.INBOUND:
        return Incoming.objects.filter(peer=peer, created_at__gte=since).count()
    return Outgoing.objects.filter(peer=peer, method="SendMessage", created_at__gte=since).count()
