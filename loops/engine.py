"""Advances loop runs, one step per Celery task (loops.tasks.advance).

A step holds the run's lease (a compare-and-set on lease_worker/lease_expires_at, so one
worker at a time) and does as much of the current iteration as it can without waiting:

    open      broadcast to the audience; in-process agents bid at once; select
    execute   selected agents perform (outside any transaction); spawn children if asked
    close     merge, validate, exit checks; the next phase or iteration, or the end

Every write re-checks the run under its row lock (state running, lease ours), so a pause,
cancel or halt committed meanwhile turns the rest of the step into a no-op. Unique keys on
(run, number) and (iteration, agent) make a re-run of a step after a crash create nothing
twice; contributions left `running` by a dead worker are performed again (at least once).
Nothing imports this module but loops.tasks (STYLE.md B.2).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

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
)
from loops.declare import (
    Bid as BidAnswer,
)
from loops.models import Agent, Bid, Blueprint, Contribution, Iteration, LoopRun
from oversight import gates

logger = logging.getLogger(__name__)
State = LoopRun.State
Reason = LoopRun.ExitReason
LEASE = timedelta(seconds=settings.LOOP_LEASE_SECONDS)
STALE = timedelta(seconds=settings.LOOP_STALE_SECONDS)
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


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
       for a minute (the message was lost): enqueue a step; the lease decides who runs it.
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


def _claim(run_id: int, now: datetime) -> bool:
    return bool(
        LoopRun.objects.filter(pk=run_id, state=State.RUNNING)
        .filter(Q(lease_worker="") | Q(lease_expires_at__lt=now) | Q(lease_worker=WORKER_ID))
        .update(lease_worker=WORKER_ID, lease_expires_at=now + LEASE)
    )


def _release(run_id: int) -> None:
    LoopRun.objects.filter(pk=run_id, lease_worker=WORKER_ID).update(
        lease_worker="", lease_expires_at=None
    )


def _locked(run_id: int) -> LoopRun:
    """The run under its row lock, still running and still ours; else abort the step."""
    run = LoopRun.objects.select_for_update(of=("self",)).select_related("blueprint").get(pk=run_id)
    if run.state != State.RUNNING or run.lease_worker != WORKER_ID or not gates.may_proceed(run):
        raise StepAborted
    return run


def _step(run_id: int, now: datetime) -> None:
    run = LoopRun.objects.select_related("blueprint").get(pk=run_id)
    spec = BLUEPRINTS.get(run.blueprint.name)
    if spec is None:
        with transaction.atomic():
            _finish(
                _locked(run_id),
                State.FAILED,
                Reason.ERROR,
                f"blueprint {run.blueprint.name!r} is no longer declared",
            )
        return
    if not gates.may_proceed(run):
        return
    iteration = run.iterations.exclude(status=Iteration.Status.CLOSED).order_by("-number").first()
    if iteration is None:
        if _resource_exit(run, spec, now):
            return
        iteration = _open(run, spec, now)
        if iteration is None:
            return
    if iteration.status == Iteration.Status.BIDDING:
        if not _close_bidding(run, spec, iteration, now):
            return
    if iteration.status == Iteration.Status.EXECUTING:
        if not _execute(run, spec, iteration):
            return
    _close(run_id, spec, iteration.pk)


# --- 1. Broadcast and bids ------------------------------------------------------------------


def _audience(run: LoopRun, phase: Phase) -> list[Agent]:
    """Online agents of the domain with every required capability (CONCEPTS 3, 33)."""
    agents = Agent.objects.filter(domain_id=run.domain_id, status=Agent.Status.ONLINE)
    excluded = gates.agents_excluded(run)
    required = set(phase.capabilities)
    return [
        agent
        for agent in agents
        if required <= set(agent.capabilities)
        and agent.pk not in excluded
        and (phase.task_type in agent.task_types or not agent.task_types)
    ]


def _open(run: LoopRun, spec: BlueprintSpec, now: datetime) -> Iteration | None:
    """Create the next iteration. A `call` phase spawns its children instead of bidding."""
    phase = spec.phases[run.phase]
    number = run.iteration + 1
    feedback = run.context.get("feedback", [])
    task = Task(
        run.pk, number, phase.name, phase.task_type, phase.payload, run.context, tuple(feedback)
    )
    audience = [] if phase.call else _audience(run, phase)
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
            status=Iteration.Status.BIDDING if not phase.call else Iteration.Status.EXECUTING,
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
        run.iteration = number
        run.updated_at = answered_at
        run.save(update_fields=["iteration", "updated_at"])
        bids = [
            _bid_row(iteration, agent, answers[agent.pk], now, answered_at)
            for agent in audience
            if answers[agent.pk] is not None
        ]
        Bid.objects.bulk_create(bids, ignore_conflicts=True)
        events = [
            (
                run.pk,
                "iteration.broadcast",
                {"iteration": number, "phase": phase.name, "audience": len(audience)},
            )
        ]
        events += [
            (run.pk, "bid.received", {"agent": b.agent_id, "decision": b.decision}) for b in bids
        ]
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
    if isinstance(answer, BidAnswer):
        return Bid(
            iteration=iteration,
            agent=agent,
            decision=Bid.Decision.BID,
            confidence=min(1.0, max(0.0, answer.confidence)),
            est_cost=answer.est_cost,
            started_at=asked_at,
            received_at=received_at,
        )
    return Bid(
        iteration=iteration,
        agent=agent,
        decision=Bid.Decision.DECLINE,
        reason=getattr(answer, "reason", ""),
        started_at=asked_at,
        received_at=received_at,
    )


def _close_bidding(run, spec: BlueprintSpec, iteration: Iteration, now: datetime) -> bool:
    """Close the bid window once everyone answered or it passed (CONCEPTS 23, 24); select.

    Returns False when the window is still open (the step is rescheduled for its end).
    """
    audience = iteration.broadcast["audience"]
    answered = set(iteration.bids.values_list("agent_id", flat=True))
    if len(answered) < len(audience) and now < iteration.bid_window_ends_at:
        # Release first, so the rescheduled step can claim the run; the fresh updated_at
        # keeps the reaper from enqueuing duplicates while we wait.
        LoopRun.objects.filter(pk=run.pk, lease_worker=WORKER_ID).update(
            lease_worker="", lease_expires_at=None, updated_at=timezone.now()
        )
        services._enqueue(run.pk, countdown=(iteration.bid_window_ends_at - now).total_seconds())
        return False
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
        bids = list(iteration.bids.select_related("agent"))
        chosen = select(spec, bids)
        for bid in bids:
            bid.selected, bid.selection_reason = chosen.get(bid.pk, (False, bid.reason))
        Bid.objects.bulk_update(bids, ["selected", "selection_reason"])
        winners = [b for b in bids if b.selected]
        events = [
            (
                run.pk,
                "bid.received",
                {"agent": b.agent_id, "decision": "decline", "reason": b.reason},
            )
            for b in silent
        ]
        events.append((run.pk, "selection.made", {"selected": [b.agent_id for b in winners]}))
        if len(winners) < max(spec.quorum, 1):
            events.append(
                (run.pk, "iteration.no_quorum", {"selected": len(winners), "quorum": spec.quorum})
            )
            _close_iteration(
                iteration,
                Iteration.Outcome.NO_QUORUM,
                f"{len(winners)} selected, quorum {spec.quorum}",
            )
            services.events_write(run.root_id, events)
            if spec.policy.on_insufficient_bids == "fail":
                _finish(
                    run,
                    State.FAILED,
                    Reason.INSUFFICIENT_BIDS,
                    f"{len(winners)} agents bid; the quorum is {spec.quorum}",
                )
            else:
                _after_iteration(run, spec)
            return False
        Contribution.objects.bulk_create(
            [
                Contribution(iteration=iteration, agent_id=b.agent_id, est_cost=b.est_cost)
                for b in winners
            ],
            ignore_conflicts=True,
        )
        iteration.status = Iteration.Status.EXECUTING
        iteration.save(update_fields=["status"])
        services.events_write(run.root_id, events)
    return True


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
        reasons[bid.pk] = (
            won,
            f"{'selected' if won else 'not selected'}: rank {rank} of "
            f"{len(bidders)} by confidence {bid.confidence:.2f} "
            f"({rule[spec.selection]})",
        )
    return reasons


# --- 2. Contributions and spawns ----------------------------------------------------------------


def _execute(run: LoopRun, spec: BlueprintSpec, iteration: Iteration) -> bool:
    """Run the selected in-process agents, then spawn requested children.

    Returns False when the run now waits (for children, or for remote contributions).
    """
    phase = spec.phases[iteration.phase]
    if phase.call:
        args = _call_input(run, spec, iteration.phase)
        return _spawn(run.pk, spec, iteration, [Spawn(name, args) for name in phase.call])
    task = Task(
        run.pk,
        iteration.number,
        phase.name,
        phase.task_type,
        phase.payload,
        run.context,
        tuple(iteration.broadcast.get("feedback", [])),
    )
    spawns: list[Spawn] = []
    for contribution in iteration.contributions.select_related("agent").exclude(
        status__in=[Contribution.Status.COMPLETED, Contribution.Status.FAILED]
    ):
        outcome = _perform(run, spec, iteration, contribution, task)
        if outcome is not None:
            spawns.extend(outcome.spawn)
    if iteration.contributions.exclude(
        status__in=[Contribution.Status.COMPLETED, Contribution.Status.FAILED]
    ).exists():
        return False  # remote contributions still out: their arrival re-enqueues the step
    if spawns:
        return _spawn(run.pk, spec, iteration, spawns)
    return True


def _perform(run, spec, iteration, contribution, task) -> Outcome | None:
    """One agent call with recorded attempts (CONCEPTS 5, 55); outside any transaction."""
    implementation = IMPLEMENTATIONS.get(contribution.agent.config.get("implementation", ""))
    if implementation is None:
        return None  # remote agents perform through their own tasks (adapters)
    started = timezone.now()
    with transaction.atomic():
        _locked(run.pk)  # the gate once more, right before the call (H1)
        # A contribution left `running` by a dead worker still holds its reservation.
        fresh = contribution.status == Contribution.Status.PENDING
        affordable = not fresh or services.cost_reserve(run.pk, contribution.est_cost)
        if affordable:
            # A long call must not look like a dead worker.
            LoopRun.objects.filter(pk=run.pk).update(lease_expires_at=started + LEASE)
            Contribution.objects.filter(pk=contribution.pk).update(
                status=Contribution.Status.RUNNING, started_at=started
            )
            requested = {"agent": contribution.agent_id, "layer": "retry"}
            services.events_write(run.root_id, [(run.pk, "agent.call.requested", requested)])
    if not affordable:
        refusal = {"n": 0, "error_class": "budget", "message": "the estimate exceeds the budget"}
        _record(contribution, None, [refusal])
        return None
    attempts, outcome = list(contribution.attempts), None
    retry = spec.policy.retry
    for n in range(len(attempts) + 1, retry.max_attempts + 1):
        began = timezone.now()
        try:
            outcome = implementation().perform(task)
            attempts.append({"n": n, "started": began.isoformat(), "error_class": ""})
            break
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
    services.cost_settle(
        run.pk,
        reserved=contribution.est_cost,
        actual=outcome.cost if outcome else 0,
        tokens=outcome.tokens if outcome else 0,
    )
    _record(contribution, outcome, attempts, started=started)
    return outcome


def _record(contribution, outcome, attempts, started=None) -> None:
    finished = timezone.now()
    iteration = contribution.iteration
    late = finished > iteration.gather_deadline_at
    fields = {
        "attempts": attempts,
        "finished_at": finished,
        "late": late,
        "latency_ms": (finished - started).total_seconds() * 1000 if started else None,
    }
    if outcome is not None:
        fields.update(
            status=Contribution.Status.COMPLETED,
            output=outcome.output,
            cost=outcome.cost,
            tokens=outcome.tokens,
        )
    else:
        last = attempts[-1] if attempts else {}
        fields.update(
            status=Contribution.Status.FAILED,
            error_class=last.get("error_class", ""),
            error=last.get("message", ""),
        )
    with transaction.atomic():
        run = LoopRun.objects.select_for_update(of=("self",)).get(pk=iteration.run_id)
        # Paused, cancelled or halted while the agent worked: keep the result, held back
        # from the merge until the run may proceed again (CONCEPTS 42).
        held = run.state != State.RUNNING or run.lease_worker != WORKER_ID
        Contribution.objects.filter(pk=contribution.pk).update(**fields, held=held)
        kind = "agent.call.responded" if outcome is not None else "agent.call.errored"
        services.events_write(
            run.root_id,
            [
                (
                    run.pk,
                    kind,
                    {
                        "agent": contribution.agent_id,
                        "tokens": fields.get("tokens", 0),
                        "late": late,
                        "held": held,
                        "attempts": len(attempts),
                        "layer": "retry",
                    },
                )
            ],
        )
    if held:
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
    started = 0
    with transaction.atomic():
        run = _locked(run_id)
        events = []
        seen = set(
            run.children.filter(spawned_by=iteration).values_list("blueprint__name", flat=True)
        )
        for request in requests:
            refusal = _spawn_refusal(run, spec, request, seen)
            if refusal:
                events.append(
                    (run.pk, "child.refused", {"blueprint": request.blueprint, "reason": refusal})
                )
                continue
            child_spec = BLUEPRINTS[request.blueprint]
            budget = _child_budget(run, child_spec)
            if budget is False:
                events.append(
                    (
                        run.pk,
                        "child.refused",
                        {
                            "blueprint": request.blueprint,
                            "reason": "the parent's remaining budget cannot cover it",
                        },
                    )
                )
                continue
            seen.add(request.blueprint)
            child = services._create_run(
                child_spec,
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
        if (
            started
            or run.children.filter(spawned_by=iteration)
            .exclude(state__in=LoopRun.TERMINAL)
            .exists()
        ):
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
    left = run.budget_left
    if left is None:
        return wanted
    budget = left if wanted is None else min(wanted, left)
    if budget <= 0 or not services.cost_reserve(run.pk, budget):
        return False
    run.refresh_from_db(fields=["cost_reserved"])
    return budget


# --- 3. Merge, validate, exit ---------------------------------------------------------------


@dataclass
class _Judgement:
    merged: Any = None
    rationale: str = ""
    ok: bool = False
    score: float | None = None
    feedback: tuple[str, ...] = ()
    merge_error: str = ""


def _judge(run: LoopRun, spec: BlueprintSpec, iteration: Iteration) -> _Judgement:
    """Merge the gathered contributions (or the children's results) and validate them."""
    phase = spec.phases[iteration.phase]
    if phase.call:
        results = {name: run.context.get("children", {}).get(name, {}) for name in phase.call}
        failed = [n for n, r in results.items() if r.get("state") != State.SUCCEEDED]
        if failed:
            return _Judgement(merge_error=f"children did not succeed: {', '.join(failed)}")
        judged = _Judgement(
            merged={n: r.get("result") for n, r in results.items()},
            rationale=f"results of {', '.join(phase.call)}",
        )
    else:
        candidates = _candidates(iteration)
        try:
            merged = merge.merge(
                spec.merge,
                candidates,
                min_results=max(spec.quorum, 1),
                threshold=spec.consensus_threshold,
            )
        except merge.MergeError as exc:
            return _Judgement(merge_error=f"{exc.code}: {exc.detail}")
        judged = _Judgement(merged=merged.value, rationale=merged.rationale)
    last = iteration.phase == len(spec.phases) - 1
    names = (*phase.validators, *(spec.validators if last else ()))
    verdicts = [(name, VALIDATORS[name](judged.merged, run.context)) for name in names]
    judged.ok = all(v.ok for _, v in verdicts)
    scores = [v.score for _, v in verdicts if v.score is not None]
    judged.score = min(scores) if scores else None
    judged.feedback = tuple(f"{name}: {v.feedback}" for name, v in verdicts if not v.ok)
    return judged


def _candidates(iteration: Iteration) -> list[merge.Candidate]:
    confidence = dict(iteration.bids.values_list("agent_id", "confidence"))
    return [
        merge.Candidate(c.agent.name, c.output, confidence.get(c.agent_id) or 0.0, c.finished_at)
        for c in iteration.contributions.select_related("agent").filter(
            status=Contribution.Status.COMPLETED, late=False
        )
    ]


def _close(run_id: int, spec: BlueprintSpec, iteration_id: int) -> None:
    run = LoopRun.objects.select_related("blueprint").get(pk=run_id)
    iteration = Iteration.objects.get(pk=iteration_id)
    judged = _judge(run, spec, iteration)
    with transaction.atomic():
        run = _locked(run_id)
        if Iteration.objects.filter(pk=iteration_id, status=Iteration.Status.CLOSED).exists():
            raise StepAborted  # closed by an earlier attempt of this step
        phase = spec.phases[iteration.phase]
        iteration.merged, iteration.rationale = judged.merged, judged.rationale
        iteration.validation = {
            "ok": judged.ok,
            "score": judged.score,
            "feedback": list(judged.feedback),
            "error": judged.merge_error,
        }
        iteration.feedback = list(judged.feedback) or (
            [judged.merge_error] if judged.merge_error else []
        )
        ok = judged.ok and not judged.merge_error
        outcome = (
            Iteration.Outcome.VALIDATED
            if ok
            else (
                Iteration.Outcome.MERGE_FAILED if judged.merge_error else Iteration.Outcome.REJECTED
            )
        )
        _close_iteration(iteration, outcome, judged.rationale or judged.merge_error)
        events = [
            (
                run.pk,
                "iteration.merged" if not judged.merge_error else "merge.failed",
                {"iteration": iteration.number, "rationale": iteration.rationale},
            ),
            (
                run.pk,
                "validation.passed" if ok else "validation.failed",
                {
                    "iteration": iteration.number,
                    "score": judged.score,
                    "feedback": iteration.feedback,
                    "layer": "validation",
                },
            ),
        ]
        services.events_write(run.root_id, events)
        run.context.setdefault("phases", {})[phase.name] = judged.merged
        run.context["feedback"] = [] if ok else iteration.feedback
        run.save(update_fields=["context"])
        if phase.call and judged.merge_error:
            return _finish(run, State.FAILED, Reason.CHILD_FAILED, judged.merge_error)
        if ok and _quality_exit(run, spec, iteration, judged):
            return
        if not ok and _rounds_in_phase(run, iteration.phase) >= spec.policy.validation_rounds:
            if spec.policy.on_validation_exhausted == "interrupt":
                run.move_to(State.INTERRUPTED)
                run.save(update_fields=["state", "updated_at"])
                services.events_write(
                    run.root_id,
                    [
                        (
                            run.pk,
                            "interrupt.raised",
                            {"reason": "validation exhausted", "feedback": iteration.feedback},
                        )
                    ],
                )
                return None
            return _finish(
                run,
                State.FAILED,
                Reason.VALIDATION_EXHAUSTED,
                "; ".join(iteration.feedback) or "validation failed every round",
            )
        _after_iteration(run, spec)
        return None


def _quality_exit(run, spec, iteration, judged) -> bool:
    """The last phase validated, or the score reached its target: succeeded (CONCEPTS 67)."""
    exits = spec.policy.exits
    if (
        "score_target" in exits.quality
        and judged.score is not None
        and (judged.score >= exits.score_target)
    ):
        _finish(
            run, State.SUCCEEDED, Reason.SCORE_TARGET, f"score {judged.score}", result=judged.merged
        )
        return True
    if iteration.phase + 1 < len(spec.phases):
        run.phase = iteration.phase + 1
        run.save(update_fields=["phase"])
        services.events_write(
            run.root_id, [(run.pk, "phase.advanced", {"phase": spec.phases[run.phase].name})]
        )
        return False
    if "validated" in exits.quality:
        _finish(
            run, State.SUCCEEDED, Reason.QUALITY, "the last phase validated", result=judged.merged
        )
        return True
    return False


def _rounds_in_phase(run: LoopRun, phase: int) -> int:
    return (
        run.iterations.filter(phase=phase)
        .exclude(outcome__in=[Iteration.Outcome.VALIDATED, Iteration.Outcome.ABANDONED])
        .count()
    )


def _after_iteration(run: LoopRun, spec: BlueprintSpec) -> None:
    """Inside the closing transaction: a resource exit, or the next step after commit."""
    if not _resource_exit(run, spec, timezone.now(), locked=True):
        run.updated_at = timezone.now()
        run.lease_worker, run.lease_expires_at = "", None  # the next step may claim at once
        run.save(update_fields=["updated_at", "lease_worker", "lease_expires_at"])
        services._enqueue(run.pk)


def _resource_exit(run: LoopRun, spec: BlueprintSpec, now: datetime, locked=False) -> bool:
    exits = spec.policy.exits
    reason = ""
    if exits.max_iterations is not None and run.iteration >= exits.max_iterations:
        reason, detail = Reason.MAX_ITERATIONS, f"{run.iteration} iterations"
    elif run.deadline_at is not None and now >= run.deadline_at:
        reason, detail = Reason.DEADLINE, f"deadline {run.deadline_at.isoformat()}"
    elif run.budget is not None and run.cost >= run.budget:
        reason, detail = Reason.BUDGET, f"cost {run.cost} of budget {run.budget}"
    if not reason:
        return False
    if locked:
        _finish(run, State.EXHAUSTED, reason, detail, result=_best_so_far(run))
    else:
        with transaction.atomic():
            locked_run = _locked(run.pk)
            _finish(locked_run, State.EXHAUSTED, reason, detail, result=_best_so_far(locked_run))
    return True


def _best_so_far(run: LoopRun) -> Any:
    last = run.iterations.filter(outcome=Iteration.Outcome.VALIDATED).order_by("-number").first()
    return last.merged if last else None


def _close_iteration(iteration: Iteration, outcome: str, rationale: str) -> None:
    iteration.status, iteration.outcome = Iteration.Status.CLOSED, outcome
    iteration.rationale = rationale
    iteration.closed_at = timezone.now()
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


def _finish(run: LoopRun, state: str, reason: str, detail: str, result: Any = None) -> None:
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
            "lease_worker",
            "lease_expires_at",
            "updated_at",
        ]
    )
    services.events_write(
        run.root_id, [(run.pk, "run.exited", {"state": state, "exit_reason": reason})]
    )
    if run.parent_id:
        services.child_returned(child=run)
