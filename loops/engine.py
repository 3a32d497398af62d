"""Advances loop runs, one step per Celery task (loops.tasks.advance).

A step holds the run's lease (a compare-and-set on lease_worker/lease_expires_at, so one
worker at a time) and does as much of the current iteration as it can without waiting, in
as few transactions as it can (DESIGN.md section 6 counts the cost of each):

    open     one transaction: the iteration, the audience's bids (in-process agents answer
             at once), and, once everyone answered, the selection and the claim of the calls
    perform  the selected in-process agents work, outside any transaction
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

import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import jsonschema
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from loops import merge, services
from loops.declare import (
    BLUEPRINTS,
    IMPLEMENTATIONS,
    MAX_STACK_DEPTH,
    VALIDATORS,
    BlueprintSpec,
    Decline,
    Outcome,
    Phase,
    Spawn,
    Task,
    Verdict,
)
from loops.declare import Bid as BidAnswer
from loops.models import Agent, Bid, Blueprint, Contribution, Iteration, LoopRun
from oversight import gates

logger = logging.getLogger(__name__)
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


def advance(*, run_id: int, now: datetime | None = None) -> None:
    """Take the next step of a run if it is running and nobody else holds it."""
    now = now or timezone.now()
    if not _claim(run_id, now):
        return  # another worker holds it, or it is not running: nothing to do
    try:
        _step(run_id, now)
    except (StepAborted, LoopRun.DoesNotExist):
        pass  # paused, cancelled or halted under us, or deleted: not an error for a worker
    finally:
        _release(run_id)


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


def _worker() -> str:
    """Who holds a lease: this host, process and thread (a thread runs one step at a time)."""
    return f"{HOST}:{os.getpid()}:{threading.get_ident()}"


def _claim(run_id: int, now: datetime) -> bool:
    return bool(
        LoopRun.objects.filter(pk=run_id, state=State.RUNNING)
        .filter(Q(lease_worker="") | Q(lease_expires_at__lt=now))
        .update(lease_worker=_worker(), lease_expires_at=now + LEASE)
    )


def _release(run_id: int) -> None:
    LoopRun.objects.filter(pk=run_id, lease_worker=_worker()).update(
        lease_worker="", lease_expires_at=None
    )


def _lock(run_id: int) -> tuple[LoopRun, bool]:
    """The run under its row lock, and whether it is still running, ours and allowed to go."""
    run = LoopRun.objects.select_for_update().get(pk=run_id)
    ours = run.state == State.RUNNING and run.lease_worker == _worker()
    return run, ours and gates.may_proceed(run)


def _locked(run_id: int) -> LoopRun:
    run, may = _lock(run_id)
    if not may:
        raise StepAborted
    return run


def _step(run_id: int, now: datetime) -> None:
    run = LoopRun.objects.select_related("blueprint").get(pk=run_id)
    spec = BLUEPRINTS.get(run.blueprint.name)
    if spec is None:
        with transaction.atomic():
            why = f"blueprint {run.blueprint.name!r} is no longer declared"
            _finish(_locked(run_id), State.FAILED, Reason.ERROR, why, events := [])
            services.events_write(run.root_id, events)
        return
    if not gates.may_proceed(run):
        return
    iteration = run.iterations.exclude(status=Iteration.Status.CLOSED).order_by("-number").first()
    if iteration is None:
        if _resource_exit(run, spec, now):
            return
        iteration = _open(run, spec, now)
    if iteration.status == Iteration.Status.BIDDING:
        _close_bidding(run, spec, iteration, now)
    if iteration.status == Iteration.Status.EXECUTING:
        _execute(run, spec, iteration)
    elif iteration.status == Iteration.Status.WAITING_CHILDREN:
        _close(run, spec, iteration, list(iteration.contributions.select_related("agent")), [])


# --- 1. Broadcast, bids, selection ------------------------------------------------------------


def _audience(run: LoopRun, phase: Phase) -> list[Agent]:
    """Online agents of the domain with every required capability (CONCEPTS 3, 33)."""
    agents = Agent.objects.filter(domain_id=run.domain_id, status=Agent.Status.ONLINE)
    # In-process agents live in this worker; a remote one is alive while it beats.
    alive = Q(adapter=Agent.Adapter.PYTHON) | Q(heartbeat_at__gte=timezone.now() - HEARTBEAT)
    agents = agents.filter(alive)
    if phase.audience_from:  # only the winners of an earlier phase (CONCEPTS 28, 29)
        agents = agents.filter(pk__in=run.context.get("winners", {}).get(phase.audience_from, []))
    excluded = gates.agents_excluded(run)
    required = set(phase.capabilities)
    return [
        agent
        for agent in agents
        if required <= set(agent.capabilities)
        and agent.pk not in excluded
        and (phase.task_type in agent.task_types or not agent.task_types)
    ]


def _task(run: LoopRun, spec: BlueprintSpec, number: int, phase: int, feedback) -> Task:
    p = spec.phases[phase]
    return Task(run.pk, number, p.name, p.task_type, p.payload, run.context, tuple(feedback))


def _open(run: LoopRun, spec: BlueprintSpec, now: datetime) -> Iteration:
    """Broadcast the phase's task and record the answers; select at once if all answered."""
    phase, number = spec.phases[run.phase], run.iteration + 1
    feedback = run.context.get("feedback", [])
    audience = [] if phase.call else _audience(run, phase)
    task = _task(run, spec, number, run.phase, feedback)
    answers = {agent.pk: _ask_bid(agent, task) for agent in audience}
    answered_at = timezone.now()
    with transaction.atomic():
        run = _locked(run.pk)
        if run.iteration + 1 != number:
            raise StepAborted  # another worker opened it first
        iteration = Iteration.objects.create(
            run=run,
            number=number,
            phase=run.phase,
            phase_name=phase.name,
            status=Iteration.Status.EXECUTING if phase.call else Iteration.Status.BIDDING,
            broadcast={
                "task_type": phase.task_type,
                "payload": phase.payload,
                "capabilities": list(phase.capabilities),
                "feedback": feedback,
                "audience": [a.pk for a in audience],
                "call": list(phase.call),
            },
            bid_window_ends_at=now + timedelta(milliseconds=spec.bid_window_ms),
            gather_deadline_at=now + timedelta(milliseconds=spec.gather_deadline_ms),
            started_at=now,
        )
        bids = [
            _bid_row(iteration, agent, answers[agent.pk], now, answered_at)
            for agent in audience
            if answers[agent.pk] is not None
        ]
        run.iteration, run.updated_at = number, answered_at
        LoopRun.objects.filter(pk=run.pk).update(iteration=number, updated_at=answered_at)
        audience_size = {"iteration": number, "phase": phase.name, "audience": len(audience)}
        events: Events = [(run.pk, "iteration.broadcast", audience_size)]
        events += [
            (run.pk, "bid.received", {"agent": b.agent_id, "decision": b.decision}) for b in bids
        ]
        if len(bids) == len(audience) and not phase.call:  # early close (CONCEPTS 24)
            _select_and_claim(run, spec, iteration, bids, events)
        Bid.objects.bulk_create(bids)  # with their selection, when it was made just now
        services.events_write(run.root_id, events)
    return iteration


def _ask_bid(agent: Agent, task: Task) -> BidAnswer | Decline | None:
    """An in-process agent answers at once; None means no answer (yet)."""
    implementation = IMPLEMENTATIONS.get(agent.config.get("implementation", ""))
    if agent.adapter != Agent.Adapter.PYTHON or implementation is None:
        return None
    try:
        return implementation().bid(task)
    except Exception as exc:  # an agent's bug is its decline, not the loop's failure
        logger.warning("agent %s failed to bid: %s", agent, exc)
        return Decline(f"bid raised {type(exc).__name__}: {exc}")


def _bid_row(iteration, agent, answer, asked_at, received_at) -> Bid:
    common = {
        "iteration": iteration,
        "agent": agent,
        "started_at": asked_at,
        "received_at": received_at,
    }
    if isinstance(answer, BidAnswer):
        confidence = min(1.0, max(0.0, answer.confidence))
        return Bid(
            **common, decision=Bid.Decision.BID, confidence=confidence, est_cost=answer.est_cost
        )
    return Bid(**common, decision=Bid.Decision.DECLINE, reason=getattr(answer, "reason", ""))


def _close_bidding(run: LoopRun, spec: BlueprintSpec, iteration: Iteration, now) -> None:
    """Close the window once it passed (CONCEPTS 23): silence is a decline; then select."""
    audience = iteration.broadcast["audience"]
    bids = list(iteration.bids.select_related("agent"))
    answered = {bid.agent_id for bid in bids}
    if len(answered) < len(audience) and now < iteration.bid_window_ends_at:
        # Release first, so the rescheduled step can claim the run; the fresh updated_at
        # keeps the reaper from enqueuing duplicates while we wait.
        LoopRun.objects.filter(pk=run.pk, lease_worker=_worker()).update(
            lease_worker="", lease_expires_at=None, updated_at=timezone.now()
        )
        services.enqueue(run.pk, countdown=(iteration.bid_window_ends_at - now).total_seconds())
        return
    with transaction.atomic():
        run = _locked(run.pk)
        silent = [
            Bid(
                iteration=iteration,
                agent_id=agent_id,
                decision=Bid.Decision.DECLINE,
                reason="no answer in window",
                started_at=iteration.started_at,
                received_at=now,
                late=True,
            )
            for agent_id in audience
            if agent_id not in answered
        ]
        Bid.objects.bulk_create(silent, ignore_conflicts=True)
        events: Events = [
            (
                run.pk,
                "bid.received",
                {"agent": b.agent_id, "decision": "decline", "reason": b.reason},
            )
            for b in silent
        ]
        _select_and_claim(run, spec, iteration, bids + silent, events)
        services.events_write(run.root_id, events)


def select(spec: BlueprintSpec, bids: list[Bid]) -> dict[int, tuple[bool, str]]:
    """Which bidders win, and why (CONCEPTS 20, 21): decliners are never chosen."""
    bidders = sorted(
        (b for b in bids if b.decision == Bid.Decision.BID),
        key=lambda b: (-(b.confidence or 0), b.received_at, b.agent_id),
    )
    limit = {"all": len(bidders), "best": 1, "top_k": spec.top_k or 1}[spec.selection]
    rule = {"all": "every bidder", "best": "the most confident", "top_k": f"top {limit}"}
    reasons = {}
    for rank, bid in enumerate(bidders, start=1):
        won = rank <= limit
        reasons[bid.agent_id] = (
            won,
            f"{'selected' if won else 'not selected'}: rank {rank} of {len(bidders)} "
            f"by confidence {bid.confidence:.2f} ({rule[spec.selection]})",
        )
    return reasons


def _select_and_claim(run, spec, iteration: Iteration, bids: list[Bid], events: Events) -> None:
    """Inside the transaction holding the run: select, then claim the winners' calls.

    In-process calls are claimed (`running`) here, each with its estimated cost reserved
    (CONCEPTS 69), so the agent works right after commit. Below the quorum the iteration
    closes and the policy decides: broadcast again, or fail.
    """
    chosen = select(spec, bids)
    for bid in bids:
        bid.selected, bid.selection_reason = chosen.get(bid.agent_id, (False, bid.reason))
    if saved := [b for b in bids if b.pk]:  # else the caller inserts them as they are now
        # Silent decliners were inserted without returning their pk; they keep their reason.
        Bid.objects.bulk_update(saved, ["selected", "selection_reason"])
    winners = [b for b in bids if b.selected]
    events.append((run.pk, "selection.made", {"selected": [b.agent_id for b in winners]}))
    if len(winners) < max(spec.quorum, 1):
        _no_quorum(run, spec, iteration, len(winners), events)
        return
    now = timezone.now()
    rows = []
    for bid in winners:
        affordable = services.cost_reserve(run.pk, bid.est_cost) if bid.est_cost else True
        rows.append(
            Contribution(
                iteration=iteration,
                agent=bid.agent,
                est_cost=bid.est_cost if affordable else 0,
                confidence=bid.confidence or 0.0,
                status=Status.RUNNING if affordable else Status.FAILED,
                error_class="" if affordable else "budget",
                error="" if affordable else "the estimated cost exceeds the budget",
                started_at=now,
            )
        )
        kind = "agent.call.requested" if affordable else "agent.call.refused"
        events.append((run.pk, kind, {"agent": bid.agent_id, "layer": "retry"}))
    # The iteration was still bidding, so none of these rows can exist yet.
    iteration.claimed = Contribution.objects.bulk_create(rows)  # kept for _execute
    iteration.status = Iteration.Status.EXECUTING
    iteration.save(update_fields=["status"])


def _no_quorum(run, spec, iteration, selected: int, events: Events) -> None:
    events.append((run.pk, "iteration.no_quorum", {"selected": selected, "quorum": spec.quorum}))
    _close_iteration(
        iteration, Iteration.Outcome.NO_QUORUM, f"{selected} selected, quorum {spec.quorum}"
    )
    if spec.policy.on_insufficient_bids == "fail":
        why = f"{selected} agents bid; the quorum is {spec.quorum}"
        _finish(run, State.FAILED, Reason.INSUFFICIENT_BIDS, why, events)
    else:
        _continue(run, spec, events)


# --- 2. Calls and spawns ----------------------------------------------------------------------


@dataclass
class Result:
    """One in-process call, made outside any transaction, waiting to be recorded."""

    contribution: Contribution
    outcome: Outcome | None
    attempts: list[dict[str, Any]]
    started: datetime
    finished: datetime = field(default_factory=timezone.now)


def _execute(run: LoopRun, spec: BlueprintSpec, iteration: Iteration) -> None:
    """Make the claimed in-process calls, then close the iteration, or spawn and wait."""
    phase = spec.phases[iteration.phase]
    if phase.call:
        args = _call_input(run, spec, iteration.phase)
        if _spawn(run.pk, spec, iteration, [Spawn(name, args) for name in phase.call]):
            _close(run, spec, iteration, [], [])
        return
    # Claimed just now in this step, or (after a wait or a crash) read back.
    contributions = getattr(iteration, "claimed", None) or list(
        iteration.contributions.select_related("agent")
    )
    task = _task(
        run, spec, iteration.number, iteration.phase, iteration.broadcast.get("feedback", [])
    )
    results = [_perform(spec, c, task) for c in contributions if _in_process(c)]
    done = {r.contribution.pk for r in results}
    if any(not c.is_terminal and c.pk not in done for c in contributions):
        _record(run.pk, results)  # remote calls are still out; their arrival re-enqueues
        return
    spawns = [s for r in results if r.outcome for s in r.outcome.spawn]
    if spawns:
        _record(run.pk, results)
        if not _spawn(run.pk, spec, iteration, spawns):
            return
        contributions = list(iteration.contributions.select_related("agent"))
        results = []
    _close(run, spec, iteration, contributions, results)


def _in_process(contribution: Contribution) -> bool:
    return (
        contribution.status == Status.RUNNING
        and contribution.agent.config.get("implementation", "") in IMPLEMENTATIONS
    )


def _perform(spec: BlueprintSpec, contribution: Contribution, task: Task) -> Result:
    """One agent call with its attempts (CONCEPTS 5, 55): retryable errors are tried again
    with exponential backoff and full jitter, up to the policy's max_attempts."""
    implementation = IMPLEMENTATIONS[contribution.agent.config["implementation"]]
    retry, attempts, started = spec.policy.retry, list(contribution.attempts), timezone.now()
    for n in range(len(attempts) + 1, retry.max_attempts + 1):
        began = timezone.now()
        try:
            outcome = implementation().perform(task)
            attempts.append({"n": n, "started": began.isoformat(), "error_class": ""})
            return Result(contribution, outcome, attempts, started)
        except Exception as exc:
            attempts.append(
                {
                    "n": n,
                    "started": began.isoformat(),
                    "error_class": type(exc).__name__,
                    "message": str(exc)[:500],
                }
            )
            if not getattr(exc, "retryable", False) or n == retry.max_attempts:
                break
            delay = min(retry.cap_ms, retry.base_ms * 2 ** (n - 1)) / 1000
            time.sleep(random.uniform(0, delay) if retry.jitter else delay)  # noqa: S311
    return Result(contribution, None, attempts, started)


WRITTEN = [
    "status",
    "output",
    "cost",
    "tokens",
    "attempts",
    "finished_at",
    "held",
    "late",
    "latency_ms",
    "error_class",
    "error",
]


def _apply(run: LoopRun, results: list[Result], held: bool, events: Events) -> None:
    """Inside the transaction holding the run: write the calls' results, settle their cost.

    One UPDATE per row: Django's bulk_update builds a CASE per field, which cost several
    times more than the rows it saves here (measured in bench/).
    """
    reserved, actual, tokens = 0.0, 0.0, 0
    for r in results:
        c, o = r.contribution, r.outcome
        c.attempts, c.finished_at, c.held = r.attempts, r.finished, held
        c.late = r.finished > c.iteration.gather_deadline_at
        c.latency_ms = (r.finished - r.started).total_seconds() * 1000
        if o is not None:
            c.status, c.output, c.cost, c.tokens = Status.COMPLETED, o.output, o.cost, o.tokens
        else:
            last = r.attempts[-1] if r.attempts else {}
            c.status, c.error_class = Status.FAILED, last.get("error_class", "")
            c.error = last.get("message", "")
        Contribution.objects.filter(pk=c.pk).update(**{f: getattr(c, f) for f in WRITTEN})
        reserved, actual, tokens = reserved + c.est_cost, actual + c.cost, tokens + c.tokens
        kind = "agent.call.responded" if o else "agent.call.errored"
        events.append(
            (
                run.pk,
                kind,
                {
                    "agent": c.agent_id,
                    "tokens": c.tokens,
                    "late": c.late,
                    "held": held,
                    "attempts": len(r.attempts),
                    "layer": "retry",
                },
            )
        )
    if reserved or actual or tokens:
        services.cost_settle(run.pk, reserved=reserved, actual=actual, tokens=tokens)
        run.cost, run.tokens = run.cost + actual, run.tokens + tokens


def _record(run_id: int, results: list[Result]) -> None:
    """Write results in their own transaction; if the run stopped meanwhile, they are held
    back from the merge until it may proceed again (CONCEPTS 42)."""
    if not results:
        return
    with transaction.atomic():
        run, may = _lock(run_id)
        events: Events = []
        _apply(run, results, held=not may, events=events)
        services.events_write(run.root_id, events)
    if not may:
        raise StepAborted


def _call_input(run: LoopRun, spec: BlueprintSpec, phase: int) -> Any:
    """Like a function call's arguments: the previous phase's result, or the run's input."""
    if phase == 0:
        return run.input
    previous = run.context.get("phases", {}).get(spec.phases[phase - 1].name)
    return previous if isinstance(previous, dict) else {"value": previous}


def _spawn(run_id: int, spec: BlueprintSpec, iteration: Iteration, requests: list[Spawn]) -> bool:
    """Start the requested children (CONCEPTS 8, 9, 26, 43, 69); the parent waits for them.

    Refused requests (undeclared, too deep, over budget) are recorded with their reason.
    Returns True when nothing was started, so the iteration can close at once.
    """
    with transaction.atomic():
        run = _locked(run_id)
        events: Events = []
        called = run.children.filter(spawned_by=iteration)
        seen = set(called.values_list("blueprint__name", flat=True))
        started = 0
        for request in requests:
            refusal = _spawn_refusal(run, spec, request, seen)
            budget = None if refusal else _child_budget(run, BLUEPRINTS[request.blueprint])
            if budget is False:
                refusal = "the parent's remaining budget cannot cover it"
            if refusal:
                events.append(
                    (run.pk, "child.refused", {"blueprint": request.blueprint, "reason": refusal})
                )
                continue
            seen.add(request.blueprint)
            child = services.create_run(
                BLUEPRINTS[request.blueprint],
                Blueprint.objects.get(name=request.blueprint),
                run.domain,
                input=request.input,
                parent=run,
                spawned_by=iteration,
                budget=budget,
            )
            events.append(
                (run.pk, "child.started", {"child": child.pk, "blueprint": request.blueprint})
            )
            started += 1
        if started or called.exclude(state__in=LoopRun.TERMINAL).exists():
            iteration.status = Iteration.Status.WAITING_CHILDREN
            iteration.save(update_fields=["status"])
            run.move_to(State.WAITING)
            run.lease_worker, run.lease_expires_at = "", None
            run.save(update_fields=["state", "updated_at", "lease_worker", "lease_expires_at"])
        services.events_write(run.root_id, events)
    return not started


def _spawn_refusal(run: LoopRun, spec: BlueprintSpec, request: Spawn, seen: set[str]) -> str:
    if request.blueprint not in spec.children:
        return f"{request.blueprint!r} is not a declared child of {spec.name!r}"
    if request.blueprint in seen:
        return f"{request.blueprint!r} was already called in this iteration"
    depth = run.depth + 1
    if depth >= MAX_STACK_DEPTH or (spec.max_depth is not None and depth > spec.max_depth):
        return f"a child at depth {depth} would pass the depth bound"
    return ""


def _child_budget(run: LoopRun, child_spec: BlueprintSpec) -> float | bool | None:
    """The child's budget, reserved from the parent's remainder; False if it cannot be."""
    wanted = child_spec.policy.exits.budget
    run.refresh_from_db(fields=["cost", "cost_reserved"])
    left = run.budget_left
    if left is None:
        return wanted
    budget = left if wanted is None else min(wanted, left)
    if budget <= 0 or not services.cost_reserve(run.pk, budget):
        return False
    return budget


# --- 3. Merge, validate, exit -------------------------------------------------------------------


@dataclass
class Judgement:
    merged: Any = None
    rationale: str = ""
    ok: bool = False
    score: float | None = None
    feedback: tuple[str, ...] = ()
    error: str = ""


def _judge(run, spec, iteration, contributions, results) -> Judgement:
    """Merge the gathered contributions (or the children's results) and validate them."""
    phase = spec.phases[iteration.phase]
    if phase.call:
        returned = {name: run.context.get("children", {}).get(name, {}) for name in phase.call}
        failed = [n for n, r in returned.items() if r.get("state") != State.SUCCEEDED]
        if failed:
            return Judgement(error=f"children did not succeed: {', '.join(failed)}")
        judged = Judgement(
            merged={n: r.get("result") for n, r in returned.items()},
            rationale=f"results of {', '.join(phase.call)}",
        )
    else:
        fresh = {r.contribution.pk: r for r in results}
        candidates = [
            merge.Candidate(
                c.agent.name, fresh[c.pk].outcome.output, c.confidence, fresh[c.pk].finished
            )
            if c.pk in fresh
            else merge.Candidate(c.agent.name, c.output, c.confidence, c.finished_at)
            for c in contributions
            if (
                c.pk in fresh
                and fresh[c.pk].outcome is not None
                and fresh[c.pk].finished <= iteration.gather_deadline_at
            )
            or (c.pk not in fresh and c.status == Status.COMPLETED and not c.late)
        ]
        try:
            merged = merge.merge(
                spec.merge,
                candidates,
                min_results=max(spec.quorum, 1),
                threshold=spec.consensus_threshold,
            )
        except merge.MergeError as exc:
            return Judgement(error=f"{exc.code}: {exc.detail}")
        judged = Judgement(merged=merged.value, rationale=merged.rationale)
    last = iteration.phase == len(spec.phases) - 1
    names = (*phase.validators, *(spec.validators if last else ()))
    verdicts = [(name, VALIDATORS[name](judged.merged, run.context)) for name in names]
    if phase.output_schema is not None:
        verdicts.append(("output_schema", _schema_verdict(phase.output_schema, judged.merged)))
    judged.ok = all(v.ok for _, v in verdicts)
    scores = [v.score for _, v in verdicts if v.score is not None]
    judged.score = min(scores) if scores else None
    judged.feedback = tuple(f"{name}: {v.feedback}" for name, v in verdicts if not v.ok)
    return judged


def _schema_verdict(schema: dict[str, Any], value: Any) -> Verdict:
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or 'the result'}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(value)
    ]
    return Verdict(ok=not problems, feedback="; ".join(problems))


def _close(run, spec, iteration, contributions, results) -> None:
    """Record the calls, merge, validate and decide, in one transaction."""
    judged = _judge(run, spec, iteration, contributions, results)
    with transaction.atomic():
        run, may = _lock(run.pk)
        events: Events = []
        _apply(run, results, held=not may, events=events)
        if not may:
            services.events_write(run.root_id, events)
            raise StepAborted  # the results stay, held; nothing is decided while stopped
        ok = judged.ok and not judged.error
        iteration.merged, iteration.rationale = judged.merged, judged.rationale
        iteration.feedback = list(judged.feedback) or ([judged.error] if judged.error else [])
        iteration.validation = {
            "ok": ok,
            "score": judged.score,
            "feedback": list(judged.feedback),
            "error": judged.error,
        }
        outcome = (
            Iteration.Outcome.VALIDATED
            if ok
            else Iteration.Outcome.MERGE_FAILED
            if judged.error
            else Iteration.Outcome.REJECTED
        )
        _close_iteration(iteration, outcome, judged.rationale or judged.error)
        events.append(
            (
                run.pk,
                "iteration.merged" if not judged.error else "merge.failed",
                {"iteration": iteration.number, "rationale": iteration.rationale},
            )
        )
        events.append(
            (
                run.pk,
                "validation.passed" if ok else "validation.failed",
                {
                    "iteration": iteration.number,
                    "score": judged.score,
                    "feedback": iteration.feedback,
                    "layer": "validation",
                },
            )
        )
        if ok:  # who won this phase, for a later phase's audience (CONCEPTS 28)
            winners = [c.agent_id for c in contributions if c.status != Status.FAILED]
            run.context.setdefault("winners", {})[iteration.phase_name] = winners
        if not ok and any(c.error_class == "budget" for c in contributions):
            why = "the budget left cannot pay for the calls this iteration needed"
            _finish(run, State.EXHAUSTED, Reason.BUDGET, why, events, _best_so_far(run))
        else:
            _decide(run, spec, iteration, judged, ok, events)
        services.events_write(run.root_id, events)


def _decide(run, spec, iteration, judged: Judgement, ok: bool, events: Events) -> None:
    """After a closed iteration: a quality exit, the next phase, another round, or the end."""
    phase = spec.phases[iteration.phase]
    context = run.context
    context.setdefault("phases", {})[phase.name] = judged.merged
    context["feedback"] = [] if ok else iteration.feedback
    context["rounds"] = 0 if ok else context.get("rounds", 0) + 1  # failed rounds this phase
    if judged.score is not None:  # the score history and the best so far (CONCEPTS 54, 68)
        context.setdefault("scores", []).append(judged.score)
        if judged.score >= context.get("best", {}).get("score", float("-inf")):
            context["best"] = {"score": judged.score, "result": judged.merged}
    if phase.call and judged.error:
        return _finish(run, State.FAILED, Reason.CHILD_FAILED, judged.error, events)
    exits = spec.policy.exits
    if ok and "score_target" in exits.quality and (judged.score or 0) >= exits.score_target:
        why = f"score {judged.score}"
        return _finish(run, State.SUCCEEDED, Reason.SCORE_TARGET, why, events, judged.merged)
    if ok and iteration.phase + 1 < len(spec.phases):
        run.phase = iteration.phase + 1
        events.append((run.pk, "phase.advanced", {"phase": spec.phases[run.phase].name}))
    elif ok and "validated" in exits.quality:
        why = "the last phase validated"
        return _finish(run, State.SUCCEEDED, Reason.QUALITY, why, events, judged.merged)
    elif not ok and _no_progress(context.get("scores", []), exits.no_progress):
        epsilon, k = exits.no_progress
        why = f"the best score improved by less than {epsilon} in {k} iterations"
        best = context["best"]["result"]
        return _finish(run, State.EXHAUSTED, Reason.NO_PROGRESS, why, events, best)
    elif not ok and context["rounds"] >= spec.policy.validation_rounds:
        if spec.policy.on_validation_exhausted == "interrupt":
            run.move_to(State.INTERRUPTED)
            run.save(update_fields=["state", "context", "updated_at"])
            events.append(
                (
                    run.pk,
                    "interrupt.raised",
                    {"reason": "validation exhausted", "feedback": iteration.feedback},
                )
            )
            return None
        why = "; ".join(iteration.feedback) or "validation failed every round"
        return _finish(run, State.FAILED, Reason.VALIDATION_EXHAUSTED, why, events)
    return _continue(run, spec, events)


def _no_progress(scores: list[float], rule: tuple[float, int] | None) -> bool:
    """Whether the best score rose by less than epsilon in each of the last k iterations."""
    if rule is None or len(scores) <= rule[1]:
        return False
    epsilon, k = rule
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    return all(best[i] - best[i - 1] < epsilon for i in range(len(best) - k, len(best)))


def _continue(run: LoopRun, spec: BlueprintSpec, events: Events) -> None:
    """Inside the transaction holding the run: a resource exit, or the next step."""
    if _resource_exit(run, spec, timezone.now(), events):
        return
    run.updated_at = timezone.now()
    run.lease_worker, run.lease_expires_at = "", None  # the next step may claim at once
    run.save(update_fields=["phase", "context", "updated_at", "lease_worker", "lease_expires_at"])
    services.enqueue(run.pk)


def _resource_exit(run: LoopRun, spec: BlueprintSpec, now: datetime, events=None) -> bool:
    """Max iterations, deadline or budget reached: exhausted, with the best result so far
    (CONCEPTS 54, 67). With events, inside the caller's transaction; else in its own."""
    exits = spec.policy.exits
    if exits.max_iterations is not None and run.iteration >= exits.max_iterations:
        reason, detail = Reason.MAX_ITERATIONS, f"{run.iteration} iterations"
    elif run.deadline_at is not None and now >= run.deadline_at:
        reason, detail = Reason.DEADLINE, f"deadline {run.deadline_at.isoformat()}"
    elif run.budget is not None and run.cost >= run.budget:
        reason, detail = Reason.BUDGET, f"cost {run.cost} of budget {run.budget}"
    else:
        return False
    if events is not None:
        _finish(run, State.EXHAUSTED, reason, detail, events, _best_so_far(run))
        return True
    with transaction.atomic():
        locked, events = _locked(run.pk), []
        _finish(locked, State.EXHAUSTED, reason, detail, events, _best_so_far(locked))
        services.events_write(locked.root_id, events)
    return True


def _best_so_far(run: LoopRun) -> Any:
    if "best" in run.context:  # the highest-scoring result, not merely the last (CONCEPTS 54)
        return run.context["best"]["result"]
    last = run.iterations.filter(outcome=Iteration.Outcome.VALIDATED).order_by("-number").first()
    return last.merged if last else None


def _close_iteration(iteration: Iteration, outcome: str, rationale: str) -> None:
    iteration.status, iteration.outcome = Iteration.Status.CLOSED, outcome
    iteration.rationale, iteration.closed_at = rationale, timezone.now()
    iteration.save(
        update_fields=[
            "status",
            "outcome",
            "rationale",
            "closed_at",
            "merged",
            "validation",
            "feedback",
        ]
    )


def _finish(run, state: str, reason: str, detail: str, events: Events, result=None) -> None:
    """Inside a transaction holding the run: end it, and return to the parent (CONCEPTS 38)."""
    run.move_to(state)
    run.exit_reason, run.exit_detail, run.result = reason, detail, result
    run.save(
        update_fields=[
            "state",
            "exit_reason",
            "exit_detail",
            "result",
            "finished_at",
            "phase",
            "context",
            "lease_worker",
            "lease_expires_at",
            "updated_at",
        ]
    )
    events.append((run.pk, "run.exited", {"state": state, "exit_reason": reason}))
    if run.parent_id:
        services.child_returned(child=run)
