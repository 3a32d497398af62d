"""Who holds a run: the lease, and the run row locked and re-checked (the gate)."""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from loops.models import Contribution, LoopRun
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


def claim(run_id: int, now: datetime) -> bool:
    return bool(
        LoopRun.objects.filter(pk=run_id, state=State.RUNNING)
        .filter(Q(lease_worker="") | Q(lease_expires_at__lt=now))
        .update(lease_worker=worker(), lease_expires_at=now + LEASE)
    )


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
