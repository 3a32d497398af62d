"""Grants, set by admins (DESIGN.md section 8): one row per peer and direction; none, or
blueprints "", allows nothing. Every change is audited with the grant before and after."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from oversight.audit import audit_record
from realms import fragments
from realms.models import Grant, Peer

FIELDS = (
    "blueprints",
    "max_depth",
    "budget",
    "rate_per_minute",
    "answer_interrupts",
    "trace",
    "lease_s",
)


def grants_of(peer: Peer) -> dict[str, dict[str, Any] | None]:
    rows = {g.direction: g for g in peer.grants.all()}
    return {
        direction: {f: getattr(rows[direction], f) for f in FIELDS} if direction in rows else None
        for direction in Grant.Direction.values
    }


def grants_set(*, actor, peer: Peer, grants: dict[str, dict[str, Any] | None]) -> dict:
    """Replace both directions' grants of `peer` (a direction given as None: none)."""
    with transaction.atomic(durable=True):
        peer = Peer.objects.select_for_update().get(pk=peer.pk)
        before = grants_of(peer)
        for direction in Grant.Direction.values:
            wanted = grants.get(direction)
            if wanted is None:
                peer.grants.filter(direction=direction).delete()
                continue
            Grant.objects.update_or_create(
                peer=peer,
                direction=direction,
                defaults={**{f: wanted[f] for f in FIELDS}, "updated_at": timezone.now()},
            )
        after = grants_of(peer)
        audit_record(actor=actor, verb="realm.granted", target=peer, before=before, after=after)
        fragments.peers_push()  # the Realms pages, after this transaction commits
    return after
