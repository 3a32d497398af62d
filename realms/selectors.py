"""The Realms page's reads (DESIGN.md section 8), in a fixed number of queries: this realm,
each peer with its breaker, its grants and its calls in and out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count

from oversight.models import CircuitBreaker
from realms.models import Grant, Incoming, Outgoing, Peer


@dataclass
class PeerRow:
    peer: Peer
    breaker: CircuitBreaker | None
    grants: dict[str, Grant]
    calls_in: int
    calls_out: int
    waiting: int  # messages not yet delivered

    @property
    def inbound(self) -> Grant | None:
        return self.grants.get(Grant.Direction.INBOUND)

    @property
    def outbound(self) -> Grant | None:
        return self.grants.get(Grant.Direction.OUTBOUND)


def peer_rows() -> list[PeerRow]:
    peers = list(Peer.objects.prefetch_related("grants"))
    breakers = {b.peer: b for b in CircuitBreaker.objects.filter(scope=CircuitBreaker.Scope.PEER)}
    calls_in = _counts(Incoming.objects.all())
    calls_out = _counts(Outgoing.objects.filter(method="SendMessage"))
    waiting = _counts(Outgoing.objects.filter(delivered_at=None, failed_at=None))
    return [
        PeerRow(
            peer=p,
            breaker=breakers.get(p.slug),
            grants={g.direction: g for g in p.grants.all()},
            calls_in=calls_in.get(p.pk, 0),
            calls_out=calls_out.get(p.pk, 0),
            waiting=waiting.get(p.pk, 0),
        )
        for p in peers
    ]


def _counts(rows: Any) -> dict[int, int]:
    return {r["peer"]: r["n"] for r in rows.values("peer").annotate(n=Count("id"))}
