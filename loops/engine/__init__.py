"""Advances loop runs, one step per Celery task (loops.tasks.advance).

A step holds the run's lease (a compare-and-set on lease_worker/lease_expires_at, so one
worker at a time) and does as much of the current iteration as it can without waiting, in
as few transactions as it can (DESIGN.md section 6 counts the cost of each):

    open     one transaction: the iteration, the audience's bids (asked just before it:
             in-process agents at once, remote ones in parallel within the bid window),
             and, once everyone answered, the selection and the claim of the calls
    perform  the selected agents work, outside any transaction: in-process ones here, remote
             ones (HTTP, LLM) over the network, each call with its retries (engine.calls)
    close    one transaction: their results, the merge and validation, the exit checks, and
             the next phase or iteration (enqueued after commit), or the end of the run

Waiting for a bid window, for remote contributions or for child runs ends the step; whatever
ends the wait enqueues the next one. Every transaction re-checks the run under its row lock
(running, lease ours, the oversight gate), so a pause, cancel or halt committed meanwhile
turns the rest of the step into a no-op, and results that arrive anyway are kept as `held`.
Unique keys on (run, number) and (iteration, agent) make a step re-run after a crash create
nothing twice; calls a dead worker left `running` are made again (at least once).
Nothing imports this module but loops.tasks (STYLE.md B.2).
"""

from __future__ import annotations

from datetime import datetime

from django.db import OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from common import logs
from loops import services
from loops.declare import BLUEPRINTS
from loops.engine.broadcast import close_bidding, open_iteration
from loops.engine.calls import execute
from loops.engine.decisions import apply_decision
from loops.engine.exits import finish, resource_exit
from loops.engine.judge import judge_and_close
from loops.engine.lease import (
    STALE,
    Events,
    Reason,
    State,
    StepAborted,
    claim,
    locked,
    park_if_stopped,
    release,
)
from loops.models import Iteration, LoopRun
from oversight import gates

__all__ = ["advance", "reclaim"]


def advance(*, run_id: int, now: datetime | None = None) -> None:
    """Take the next step of a run if it is running and nobody else holds it."""
    now = now or timezone.now()
    claimed = claim(run_id, now)
    if claimed is None:
        return  # another worker holds it, or it is not running: nothing to do
    retry = stopped = False
    try:
        _step(*claimed, now)
    except StepAborted:
        stopped = True  # paused, cancelled, halted or interrupted under us: not an error
    except LoopRun.DoesNotExist:
        pass  # deleted
    except OperationalError as exc:
        if not services.is_deadlock(exc):
            raise
        retry = True  # a deadlock victim: its transaction rolled back whole; step again
    finally:
        release(run_id)
    if stopped:
        park_if_stopped(run_id)
    if retry:
        services.enqueue(run_id)


def reclaim(now: datetime | None = None) -> int:
    """The beat backstop for DESIGN.md H4; returns how many runs it re-enqueued or woke.

    1. Running runs whose lease expired (the worker died mid-step), or that nobody touched
       for LOOP_STALE_SECONDS (the message was lost): enqueue a step; the lease decides.
    2. Waiting parents whose children have all ended (the return raced a crash): wake them.
    """
    from loops.tasks import advance as advance_task

    now = now or timezone.now()
    stuck = list(
        LoopRun.objects.filter(state=State.RUNNING)
        .filter(Q(lease_expires_at__lt=now) | Q(lease_worker="", updated_at__lt=now - STALE))
        .values_list("pk", flat=True)[:1000]
    )
    for run_id in stuck:
        advance_task.delay(run_id)
    orphaned = list(
        LoopRun.objects.filter(state=State.WAITING)
        .exclude(children__state__in=LoopRun.LIVE)
        .values_list("pk", flat=True)[:1000]
    )
    for run_id in orphaned:
        services.run_wake(run_id=run_id)
    return len(stuck) + len(orphaned)


def _step(run: LoopRun, open_iteration_id: int | None, now: datetime) -> None:
    run_id = run.pk
    logs.add(root_id=run.root_id)  # the task's log records carry it too (common.logs)
    spec = BLUEPRINTS.get(run.blueprint.name)
    if spec is None:
        with transaction.atomic():
            why = f"blueprint {run.blueprint.name!r} is no longer declared"
            events: Events = []
            finish(locked(run_id), State.FAILED, Reason.ERROR, why, events)
            services.events_write(run.root_id, events)
        return
    if not gates.may_proceed(run):
        raise StepAborted  # advance() parks it if a halt or a breaker is why
    if "decision" in run.context:
        if apply_decision(run, spec):
            return  # a human's decision on an interrupt decided this step
        open_iteration_id = _open_iteration_id(run)  # the decision may have closed one
    iteration = Iteration.objects.get(pk=open_iteration_id) if open_iteration_id else None
    if iteration is None:
        if resource_exit(run, spec, now):
            return
        iteration = open_iteration(run, spec, now)
    if iteration.status == Iteration.Status.BIDDING:
        close_bidding(run, spec, iteration, now)
    if iteration.status == Iteration.Status.EXECUTING:
        execute(run, spec, iteration)
    elif iteration.status == Iteration.Status.WAITING_CHILDREN:
        judge_and_close(
            run, spec, iteration, list(iteration.contributions.select_related("agent")), []
        )


def _open_iteration_id(run: LoopRun) -> int | None:
    return (
        run.iterations.exclude(status=Iteration.Status.CLOSED)
        .order_by("-number")
        .values_list("pk", flat=True)
        .first()
    )
