"""Partitions stop nothing silently (DESIGN.md H10).

Reachability is what this realm sees of a peer: a beat probe fetches each approved peer's
agent card (latency and reachability for the Realms page), and a delivery that fails or
lands says the same. A request the peer makes to us says nothing of whether we reach it (a
peer whose web process is down still calls us from its workers), so it does not count.

When a realm that asked us for work cannot be reached for longer than our inbound grant's
lease, the work it asked for is paused here (paused_by "partition:<slug>"), its operators'
realm cannot see it nor act on it, and our operators are alerted. When it answers again,
exactly those runs resume, each to what it was doing, and the alert says so. The probe is a
call through the peer's breaker (scope peer): while it is closed, failures count toward
opening it; half-open, a probe may be the trial that closes it."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import httpx
from django.db import transaction
from django.utils import timezone

from common.db import retry_deadlocks
from loops.models import LoopRun
from loops.services import runs_pause_marked, runs_resume_marked, stack_changed
from loops.subtree import subtree_ids
from loops.trace import events_write_many
from oversight.audit import audit_record
from oversight.models import Alert
from oversight.services.alerts import alert_raise
from realms import frames, grants, wire
from realms.models import Grant, Incoming, Peer
from realms.services import delivery

log = logging.getLogger(__name__)
PROBE_TIMEOUT = httpx.Timeout(3.0, connect=2.0)
DEFAULT_LEASE_S = 60  # a peer with no inbound grant left: its earlier work's lease


def peers_probe() -> None:
    """The beat: probe every approved peer realm, then pause or resume what partitions
    and their ends call for."""
    for peer in Peer.objects.filter(kind=Peer.Kind.REALM, status=Peer.Status.APPROVED):
        probe(peer)
    partitions_check()


def probe(peer: Peer) -> bool:
    held = delivery.breaker_holds_probe(peer)
    started = time.monotonic()
    try:
        response = wire.http().get(f"{peer.url}/.well-known/agent-card.json", timeout=PROBE_TIMEOUT)
        ok = response.status_code == 200
    except httpx.HTTPError:
        ok = False
    latency = (time.monotonic() - started) * 1000
    if not held:
        delivery.peer_breaker_record(peer, ok=ok, started=started)
    delivery.reachability_set(peer, ok=ok, latency_ms=latency if ok else None)
    return ok


def _lease(peer: Peer) -> int:
    grant = grants.grant_of(peer, Grant.Direction.INBOUND)
    return grant.lease_s if grant else DEFAULT_LEASE_S


def partitions_check() -> None:
    now = timezone.now()
    for peer in Peer.objects.filter(kind=Peer.Kind.REALM):
        away = peer.unreachable_since
        if away is not None and now - away > timedelta(seconds=_lease(peer)):
            if Incoming.objects.filter(peer=peer, paused_at=None, run_id__isnull=False).exists():
                partition_pause(peer_id=peer.pk)
        elif away is None and Incoming.objects.filter(peer=peer, paused_at__isnull=False).exists():
            partition_resume(peer_id=peer.pk)


def _mark(peer: Peer) -> str:
    return f"partition:{peer.slug}"


@retry_deadlocks
@transaction.atomic(durable=True)
def partition_pause(*, peer_id: int) -> list[int]:
    """Pause the live work `peer` asked for (each call's run tree), in id order, pass after
    pass until a pass finds none (as a domain pause does); returns the runs paused."""
    peer = Peer.objects.select_for_update().get(pk=peer_id)
    if peer.unreachable_since is None:
        return []  # it came back meanwhile
    now = timezone.now()
    calls = list(Incoming.objects.filter(peer=peer, paused_at=None, run_id__isnull=False))
    paused = runs_pause_marked(
        lambda: LoopRun.objects.filter(
            pk__in=[pk for call in calls for pk in subtree_ids(call.run_id)]
        ),
        _mark(peer),
    )
    Incoming.objects.filter(pk__in=[c.pk for c in calls]).update(paused_at=now)
    away = (now - peer.unreachable_since).total_seconds()
    why = f"realm {peer.slug} unreachable for {away:.0f} s (lease {_lease(peer)} s)"
    events_write_many([(r.root_id, r.pk, "run.paused", {"by": why}) for r in paused])
    for run in paused:
        if run.origin:
            frames.origin_notify(run)  # it reaches the caller once it is back
    audit_record(
        actor=None,
        verb="realm.partition_paused",
        target=peer,
        note=why,
        data={"realm": peer.slug, "runs": len(paused), "run_ids": [r.pk for r in paused]},
    )
    alert_raise(
        kind="realm.partition",
        level=Alert.Level.CRITICAL,
        title=f"Realm {peer.slug} cannot be reached: the work it asked for is paused",
        body=f"{why}. {len(paused)} runs of {len(calls)} calls from {peer.slug} are paused "
        "here until it answers again; they resume then by themselves. Cancel them on their "
        "run pages if they must not.",
        target=peer,
        data={"realm": peer.slug, "runs": [r.pk for r in paused]},
    )
    for domain_id in {r.domain_id for r in paused}:
        stack_changed(domain_id)
    return [r.pk for r in paused]


@retry_deadlocks
@transaction.atomic(durable=True)
def partition_resume(*, peer_id: int) -> list[int]:
    """The peer answers again: exactly the runs its partition paused resume, each to what it
    was doing (a halt or an operator's pause since keeps its own)."""
    peer = Peer.objects.select_for_update().get(pk=peer_id)
    if peer.unreachable_since is not None:
        return []
    runs = runs_resume_marked(_mark(peer))
    for run in runs:
        if run.origin:
            frames.origin_notify(run)
    Incoming.objects.filter(peer=peer, paused_at__isnull=False).update(paused_at=None)
    why = f"realm {peer.slug} answers again"
    events_write_many(
        [(r.root_id, r.pk, "run.resumed", {"by": why, "state": r.state}) for r in runs]
    )
    audit_record(
        actor=None,
        verb="realm.partition_resumed",
        target=peer,
        note=why,
        data={"realm": peer.slug, "runs": len(runs), "run_ids": [r.pk for r in runs]},
    )
    alert_raise(
        kind="realm.partition_ended",
        level=Alert.Level.INFO,
        title=f"Realm {peer.slug} is back: the work it asked for resumed",
        body=f"{len(runs)} runs paused while {peer.slug} could not be reached resumed.",
        target=peer,
        data={"realm": peer.slug, "runs": [r.pk for r in runs]},
    )
    for domain_id in {r.domain_id for r in runs}:
        stack_changed(domain_id)
    return [r.pk for r in runs]
