"""Who holds a run: the lease, and the run row locked and re-checked (the gate)."""

from __future__ import annotations

import functools
import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction

from loops.models import Blueprint, Contribution, LoopRun
from oversight import gates

State = LoopRun.State
Reason = LoopRun.ExitReason
Status = Contribution.Status
LEASE = timedelta(seconds=settings.LOOP_LEASE_SECONDS)
STALE = timedelta(seconds=settings.LOOP_STALE_SECONDS)
HEARTBEAT = timedelta(seconds=settings.AGENT_HEARTBEAT_SECONDS)
HOST = socket.gethostname()
Events = list[tuple[int, str, dict[str, Any]]]


class StepAborted(Exception):
    """The run changed under us (paused, cancelled, halted, lease lost): stop quietly."""


def worker() -> str:
    """Who holds a lease: this host, process and thread (a thread runs one step at a time)."""
    return f"{HOST}:{os.getpid()}:{threading.get_ident()}"


# The compare-and-set and the reads the step starts from, in one statement: the run, and
# the id of its open iteration if it has one.
_CLAIM = """
WITH claimed AS (
    UPDATE loops_looprun SET lease_worker = %s, lease_expires_at = %s
    WHERE id = %s AND state = 'running' AND (lease_worker = '' OR lease_expires_at < %s)
    RETURNING *
)
SELECT claimed.*,
       (SELECT i.id FROM loops_iteration i
        WHERE i.run_id = claimed.id AND i.status <> 'closed'
        ORDER BY i.number DESC LIMIT 1) AS open_iteration_id
FROM claimed
"""


def claim(run_id: int, now: datetime) -> tuple[LoopRun, int | None] | None:
    """The run, now held by this worker, and its open iteration's id (or None) as of the
    claim; None if the run is not running or somebody else holds it."""
    claimed = list(LoopRun.objects.raw(_CLAIM, [worker(), now + LEASE, run_id, now]))
    if not claimed:
        return None
    run = claimed[0]
    run.blueprint = _blueprint(run.blueprint_id)
    return run, run.open_iteration_id  # type: ignore[attr-defined]  # _CLAIM's extra column


@functools.lru_cache(maxsize=1024)
def _blueprint(blueprint_id: int) -> Blueprint:
    """Blueprint rows are written from the declarations a process loads when it starts,
    which the engine reads from memory too (loops.declare.BLUEPRINTS): one query per
    blueprint and process rather than one per step."""
    return Blueprint.objects.get(pk=blueprint_id)


def release(run_id: int) -> None:
    LoopRun.objects.filter(pk=run_id, lease_worker=worker()).update(
        lease_worker="", lease_expires_at=None
    )


def lock(run_id: int) -> tuple[LoopRun, bool]:
    """The run under its row lock, and whether it is still running, ours and allowed to go."""
    # NO KEY: foreign-key checks of rows inserted elsewhere must not wait for it (services).
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    ours = run.state == State.RUNNING and run.lease_worker == worker()
    return run, ours and gates.may_proceed(run)


def locked(run_id: int) -> LoopRun:
    run, may = lock(run_id)
    if not may:
        raise StepAborted
    return run


def park_if_stopped(run_id: int) -> None:
    """A running run that a halt or an open breaker covers but did not park (it was started
    or spawned as the halt committed): park it now, so the lift or the reset resumes it."""
    from loops import services  # services import the engine's tasks; keep the cycle lazy

    with transaction.atomic():
        run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
        if run.state != State.RUNNING or (reason := gates.stop_reason(run)) is None:
            return
        kind, pk = reason
        if kind == "halt":
            run.move_to(State.HALTED)
        else:
            run.move_to(State.PAUSED)
            run.paused_by = f"breaker:{pk}"
        run.save(update_fields=["state", "prior_state", "paused_by", "updated_at"])
        event = "run.halted" if kind == "halt" else "run.paused"
        services.events_write(run.root_id, [(run.pk, event, {kind: pk, "prior_state": "running"})])
