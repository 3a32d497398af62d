"""Step 2: the selected agents' calls (outside any transaction) and child spawns."""

from __future__ import annotations

import random
import time
from typing import Any

from django.db import transaction
from django.utils import timezone

from loops import services
from loops.declare import BLUEPRINTS, IMPLEMENTATIONS, MAX_STACK_DEPTH, BlueprintSpec, Spawn, Task
from loops.engine.broadcast import in_process, task_for
from loops.engine.judge import judge_and_close
from loops.engine.lease import Events, State, Status, StepAborted, lock, locked
from loops.engine.results import Result, apply_results
from loops.models import Blueprint, Contribution, Iteration, LoopRun


def execute(run: LoopRun, spec: BlueprintSpec, iteration: Iteration) -> None:
    """Make the claimed in-process calls, then close the iteration, or spawn and wait."""
    phase = spec.phases[iteration.phase]
    if phase.call:
        args = call_input(run, spec, iteration.phase)
        if spawn(run.pk, spec, iteration, [Spawn(name, args) for name in phase.call]):
            judge_and_close(run, spec, iteration, [], [])
        return
    # Claimed just now in this step, or (after a wait or a crash) read back.
    contributions = iteration.claimed or list(iteration.contributions.select_related("agent"))
    task = task_for(
        run, spec, iteration.number, iteration.phase, iteration.broadcast.get("feedback", [])
    )
    results = [perform(spec, c, task) for c in contributions if claimed_here(c)]
    done = {r.contribution.pk for r in results}
    if any(not c.is_terminal and c.pk not in done for c in contributions):
        record(run.pk, results)  # remote calls are still out; their arrival re-enqueues
        return
    spawns = [s for r in results if r.outcome for s in r.outcome.spawn]
    if spawns:
        record(run.pk, results)
        if not spawn(run.pk, spec, iteration, spawns):
            return
        contributions = list(iteration.contributions.select_related("agent"))
        results = []
    judge_and_close(run, spec, iteration, contributions, results)


def claimed_here(contribution: Contribution) -> bool:
    """An in-process call claimed by this step, or left `running` by a dead worker."""
    return contribution.status == Status.RUNNING and in_process(contribution.agent)


def perform(spec: BlueprintSpec, contribution: Contribution, task: Task) -> Result:
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


def record(run_id: int, results: list[Result]) -> None:
    """Write results in their own transaction; if the run stopped meanwhile, they are held
    back from the merge until it may proceed again (CONCEPTS 42)."""
    if not results:
        return
    with transaction.atomic():
        run, may = lock(run_id)
        events: Events = []
        apply_results(run, results, held=not may, events=events)
        services.events_write(run.root_id, events)
    if not may:
        raise StepAborted


def call_input(run: LoopRun, spec: BlueprintSpec, phase: int) -> Any:
    """Like a function call's arguments: the previous phase's result, or the run's input."""
    if phase == 0:
        return run.input
    previous = run.context.get("phases", {}).get(spec.phases[phase - 1].name)
    return previous if isinstance(previous, dict) else {"value": previous}


def spawn(run_id: int, spec: BlueprintSpec, iteration: Iteration, requests: list[Spawn]) -> bool:
    """Start the requested children (CONCEPTS 8, 9, 26, 43, 69); the parent waits for them.

    Refused requests (undeclared, too deep, over budget) are recorded with their reason.
    Returns True when nothing was started, so the iteration can close at once.
    """
    with transaction.atomic():
        run = locked(run_id)
        events: Events = []
        called = run.children.filter(spawned_by=iteration)
        seen = set(called.values_list("blueprint__name", flat=True))
        started = 0
        for request in requests:
            refusal = spawn_refusal(run, spec, request, seen)
            budget = None if refusal else child_budget(run, BLUEPRINTS[request.blueprint])
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


def spawn_refusal(run: LoopRun, spec: BlueprintSpec, request: Spawn, seen: set[str]) -> str:
    if request.blueprint not in spec.children:
        return f"{request.blueprint!r} is not a declared child of {spec.name!r}"
    if request.blueprint in seen:
        return f"{request.blueprint!r} was already called in this iteration"
    depth = run.depth + 1
    if depth >= MAX_STACK_DEPTH or (spec.max_depth is not None and depth > spec.max_depth):
        return f"a child at depth {depth} would pass the depth bound"
    return ""


def child_budget(run: LoopRun, child_spec: BlueprintSpec) -> float | bool | None:
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
