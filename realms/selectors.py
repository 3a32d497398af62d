"""The Realms page's reads (DESIGN.md section 8), in a fixed number of queries whatever the
number of peers and calls: each peer with its breaker, its grants, the calls it has here
(runs this realm runs for it, live) and ours toward it (open remote frames)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count

from loops.models import LoopRun
from oversight.models import CircuitBreaker
from realms.models import Grant, Incoming, Outgoing, Peer

CALLS_LISTED = 5  # per peer and direction: the page links that many, and counts them all


@dataclass
class PeerRow:
    peer: Peer
    breaker: CircuitBreaker | None
    grants: dict[str, Grant]
    calls_in: list[LoopRun] = field(default_factory=list)  # live runs we run for it
    calls_out: list[LoopRun] = field(default_factory=list)  # our open frames toward it
    calls_in_count: int = 0
    calls_out_count: int = 0
    waiting: int = 0  # messages not yet delivered

    @property
    def inbound(self) -> Grant | None:
        return self.grants.get(Grant.Direction.INBOUND)

    @property
    def outbound(self) -> Grant | None:
        return self.grants.get(Grant.Direction.OUTBOUND)

    @property
    def asks_to_pair(self) -> bool:
        """A pairing request our admins have to answer (they asked; we have not)."""
        return self.peer.status == Peer.Status.PENDING and not self.peer.we_approved


def peer_rows() -> list[PeerRow]:
    """Every peer, by slug (six queries)."""
    peers = list(Peer.objects.prefetch_related("grants"))
    breakers = {b.peer: b for b in CircuitBreaker.objects.filter(scope=CircuitBreaker.Scope.PEER)}
    waiting = _counts(Outgoing.objects.filter(delivered_at=None, failed_at=None), "peer")
    rows = {
        p.pk: PeerRow(
            peer=p,
            breaker=breakers.get(p.slug),
            grants={g.direction: g for g in p.grants.all()},
            waiting=waiting.get(p.pk, 0),
        )
        for p in peers
    }
    live = LoopRun.objects.exclude(state__in=LoopRun.TERMINAL)
    # Calls in: Incoming names its run by id (realms.models imports no loops model), so the
    # live runs are matched in a second query, ordered by the calls' arrival.
    incoming = dict(
        Incoming.objects.filter(run_id__in=live.filter(origin__isnull=False).values("pk"))
        .order_by("-created_at")
        .values_list("run_id", "peer_id")
    )
    for run in _runs(live.filter(pk__in=list(incoming))):
        rows[incoming[run.pk]].calls_in.append(run)
    by_slug = {row.peer.slug: row for row in rows.values()}
    frames = live.filter(remote__isnull=False).exclude(remote__state="rejected")
    for frame in _runs(frames):
        if (row := by_slug.get(str((frame.remote or {}).get("realm")))) is not None:
            row.calls_out.append(frame)
    for row in rows.values():
        row.calls_in_count, row.calls_in = len(row.calls_in), row.calls_in[:CALLS_LISTED]
        row.calls_out_count, row.calls_out = len(row.calls_out), row.calls_out[:CALLS_LISTED]
    return list(rows.values())


def _runs(queryset: Any) -> list[LoopRun]:
    return list(
        queryset.select_related("blueprint")
        .only("id", "state", "remote", "blueprint__name", "created_at")
        .order_by("-created_at", "-id")
    )


def _counts(rows: Any, key: str) -> dict[int, int]:
    return {r[key]: r["n"] for r in rows.values(key).annotate(n=Count("id"))}
