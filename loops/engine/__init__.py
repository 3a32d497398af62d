"""Advances loop runs (DESIGN.md section 3): one step at a time, by the task
loops.tasks.advance, which nothing but the tasks imports (STYLE.md B.2).

A step holds the run's lease (a compare-and-set, so one worker at a time) and runs the
phases of the current iteration in sequence, each from what the one before returned:

    claim    one statement: the lease, the run, its open iteration, the gate, the agents
    open     the broadcast: bids asked outside any transaction (in-process agents at once,
             remote ones in parallel within the bid window), then one transaction: the
             iteration, the bids and, once everyone answered, the selection and the calls
    perform  the selected agents work, outside any transaction, each call inside the retry
             layer; or the phase calls child loops, and the run waits for them
    close    one transaction: the results, the merge and validation (judged just before),
             and what comes next — the next phase or round, an interrupt, or the end

Each transaction is a lock-and-gate statement, one write statement and the trace
(engine.tx): a pause, cancel or halt committed meanwhile turns the rest of the step into a
no-op, and results that arrive anyway are kept `held`. Waiting for the bid window, for
remote contributions or for children ends the step; whatever ends the wait sends the next.
When the run goes straight on, the task takes its next iteration itself while its slice
lasts (LOOP_STEP_SLICE_SECONDS), keeping the lease, instead of a hop through the queue.
Unique keys on (run, number) and (iteration, agent) make a step re-run after a crash
create nothing twice; calls a dead worker left `running` are made again (at least once).
"""

from __future__ import annotations

import time
from datetime import datetime

from django.db import OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from common import logs
from common.db import is_deadlock
from loops import services
from loops.declare import BLUEPRINTS
from loops.engine import broadcast, calls, children
from loops.engine.close import judge_and_close
from loops.engine.decisions import apply_decision
from loops.engine.exits import exhaust, finish, resource_exit
from loops.engine.lease import (
    STALE,
    AudienceChanged,
    Claim,
    Reason,
    State,
    StepAborted,
    claim,
    release,
)
from loops.engine.step import Step
from loops.engine.tx import step_tx
from loops.engine.writes import write_run
from loops.models import Contribution, Iteration, LoopRun
from loops.trace import Trace
from oversight import gates

__all__ = ["advance", "reclaim"]


def advance(*, run_id: int, now: datetime | None = None, slice_s: float = 0.0) -> None:
    """Take the run's next step if it is running and nobody else holds it; and the steps
    after it while they follow at once and `slice_s` seconds have not passed."""
    slice_ends = time.monotonic() + slice_s
    held = retry = stopped = False
    try:
        claimed = claim(run_id, now or timezone.now())
        while claimed is not None:
            step = _step_of(claimed, now or timezone.now(), slice_ends)
            held = True
            try:
                _step(step, claimed)
            except AudienceChanged:
                claimed = claim(run_id, timezone.now())
                continue
            held = not step.released
            if not step.kept:
                break
            now = None  # a frozen clock is for one step
            claimed = step.going_on() or claim(run_id, timezone.now())
    except StepAborted:
        stopped = True  # paused, cancelled, halted or interrupted under us: not an error
    except LoopRun.DoesNotExist:
        pass  # deleted
    except OperationalError as exc:
        if not is_deadlock(exc):
            raise
        retry = True  # a deadlock victim: its transaction rolled back whole; step again
    finally:
        if held:
            release(run_id)
    if stopped:
        park_if_stopped(run_id)
    if retry:
        services.enqueue(run_id)  # outside a transaction: sent at once


def _step_of(claimed: Claim, now: datetime, slice_ends: float) -> Step:
    run = claimed.run
    logs.add(root_id=run.root_id)  # the task's log records carry it too (common.logs)
    spec = BLUEPRINTS.get(run.blueprint.name)
    return Step(run, spec, now, claimed.agents, slice_ends)


def _step(step: Step, claimed: Claim) -> None:
    """The phases of one step, in order, each from what the one before returned."""
    if step.spec is None:
        return _undeclared(step)
    if claimed.stop is not None:
        raise StepAborted  # advance() parks it: a halt or a breaker covers it
    iteration, calls_claimed = claimed.iteration, None
    if "decision" in step.run.context:
        apply_decision(step)
        return None  # a human's decision on an interrupt decided this step
    if iteration is None:
        if exit := resource_exit(step.run, step.spec, step.now):
            return _exhaust(step, exit)
        iteration, calls_claimed = broadcast.open_iteration(step)
    if iteration.status == Iteration.Status.BIDDING:
        calls_claimed = broadcast.close_bidding(step, iteration)
        if calls_claimed is None:
            return None  # the window is open: the step comes back when it closes
    if iteration.status == Iteration.Status.CLOSED:
        return None  # closed at once (no quorum): the policy decided what comes next
    if iteration.status == Iteration.Status.WAITING_CHILDREN:
        return judge_and_close(step, iteration, _calls_of(iteration), [])
    if step.spec.phases[iteration.phase].call:
        requests, notes = children.called(step, iteration)
        if requests and not children.spawn(step, iteration, requests, notes):
            return None  # the parent waits; the last child's return sends its next step
        return judge_and_close(step, iteration, [], [])
    contributions = calls_claimed if calls_claimed is not None else _calls_of(iteration)
    results = calls.perform_claimed(step, iteration, contributions)
    if results is None:
        return None  # remote calls are still out; their arrival sends the next step
    if spawns := [s for r in results if r.outcome for s in r.outcome.spawn]:
        calls.record(step, results)
        if not children.spawn(step, iteration, spawns):
            return None
        contributions, results = _calls_of(iteration), []
    return judge_and_close(step, iteration, contributions, results)


def _calls_of(iteration: Iteration) -> list[Contribution]:
    """After a wait or a crash, the iteration's calls as they are."""
    return list(iteration.contributions.select_related("agent"))


def _undeclared(step: Step) -> None:
    with step_tx(step.run.pk) as tx:
        why = f"blueprint {tx.run.blueprint.name!r} is no longer declared"
        finish(tx.require(), tx.trace, State.FAILED, Reason.ERROR, why)
        write_run(tx.run, tx.trace)
    step.run = tx.run


def _exhaust(step: Step, exit: tuple[str, str]) -> None:
    with step_tx(step.run.pk) as tx:
        run = step.run = tx.require()
        exhaust(step, run, tx.trace, *exit)
        write_run(run, tx.trace)


def park_if_stopped(run_id: int) -> None:
    """A running run that a halt or an open breaker covers but did not park (it was started
    or spawned as the halt committed): park it now, so the lift or the reset resumes it."""
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
        trace = Trace(run.root_id)
        trace.add(
            run.pk,
            "run.halted" if kind == "halt" else "run.paused",
            {kind: pk, "prior_state": "running"},
        )
        trace.write()


def reclaim(now: datetime | None = None) -> int:
    """The beat backstop for DESIGN.md H4; returns how many runs it re-enqueued or woke.

    1. Running runs whose lease expired (the worker died mid-step), or that nobody touched
       for LOOP_STALE_SECONDS (the message was lost): enqueue a step; the lease decides.
    2. Waiting parents whose children have all ended (the return raced a crash): wake them.
    """
    now = now or timezone.now()
    stuck = list(
        LoopRun.objects.filter(state=State.RUNNING)
        .filter(Q(lease_expires_at__lt=now) | Q(lease_worker="", updated_at__lt=now - STALE))
        .values_list("pk", flat=True)[:1000]
    )
    for run_id in stuck:
        services.enqueue(run_id)  # outside a transaction: sent at once
    orphaned = list(
        # A remote frame waits on its peer, not on children: its answer ends it (realms).
        LoopRun.objects.filter(state=State.WAITING, remote__isnull=True)
        .exclude(children__state__in=LoopRun.LIVE)
        .values_list("pk", flat=True)[:1000]
    )
    for run_id in orphaned:
        services.run_wake(run_id=run_id)
    return len(stuck) + len(orphaned)
