"""Step 2: the selected agents' calls (outside any transaction) and child spawns."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from loops import services
from loops.agents import AgentError, adapter_for
from loops.declare import BLUEPRINTS, MAX_STACK_DEPTH, BlueprintSpec, Retry, Spawn, Task
from loops.engine.broadcast import callable_here, task_for
from loops.engine.judge import judge_and_close
from loops.engine.lease import LEASE, Events, State, Status, StepAborted, lock, locked, worker
from loops.engine.results import Result, apply_results
from loops.models import Blueprint, Contribution, Iteration, LoopRun
from oversight import gates


def execute(run: LoopRun, spec: BlueprintSpec, iteration: Iteration) -> None:
    """Make the claimed calls (in process, or remote through the retry layer), then close
    the iteration, or spawn and wait."""
    phase = spec.phases[iteration.phase]
    if phase.call:
        requests = (
            beam(run, spec, iteration)
            if phase.beam
            else [Spawn(name, call_input(run, spec, iteration.phase)) for name in phase.call]
        )
        if not requests or spawn(run.pk, spec, iteration, requests):
            judge_and_close(run, spec, iteration, [], [])
        return
    # Claimed just now in this step, or (after a wait or a crash) read back.
    contributions = iteration.claimed or list(iteration.contributions.select_related("agent"))
    task = task_for(
        run, spec, iteration.number, iteration.phase, iteration.broadcast.get("feedback", [])
    )
    results: list[Result] = []
    try:
        for c in contributions:
            if claimed_here(c):
                results.append(perform(spec, c, task))
    except StepAborted:
        # A halt (or a lost lease) stopped a remote call before it started: keep the calls
        # already made, held back from the merge, and stop here (DESIGN.md H1).
        record(run.pk, results)
        raise
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
    """A call claimed by this step, or left `running` by a dead worker, that this worker
    can make (in process, or over HTTP)."""
    return contribution.status == Status.RUNNING and callable_here(contribution.agent)


# The jitter's randomness: not a secret, and seeded by tests (CONCEPTS 57).
RNG = random.Random()  # noqa: S311


def perform(
    spec: BlueprintSpec, contribution: Contribution, task: Task, *, rng: random.Random = RNG
) -> Result:
    """One agent call with its attempts: the retry layer (Loopcraft L1, CONCEPTS 55 to 59).

    1. Before each attempt of a remote call, re-read the run: if the gate closed (a halt, a
       breaker, a pause) or our lease is gone, make no call and stop (StepAborted), leaving
       the attempt unrecorded; else extend the lease over the call's timeout.
    2. Call the agent; record the attempt {n, started, error_class, message, countdown_ms}.
    3. A retryable error waits countdown (backoff()), then tries again with retry_context
       naming the error, up to the policy's max_attempts; any other error ends the call.
    """
    adapter = adapter_for(contribution.agent)
    remote = adapter is not None and adapter.remote
    timeout = adapter.timeout_s if adapter is not None else 0.0
    retry, attempts, started = spec.policy.retry, list(contribution.attempts), timezone.now()
    retry_context = resumed_context(attempts)
    failures: list[AgentError] = []
    for n in range(len(attempts) + 1, retry.max_attempts + 1):
        if remote:
            hold_or_keep(task.run_id, timeout, contribution, attempts)
        began = timezone.now()
        try:
            if adapter is None:  # its implementation or address went away since the claim
                raise AgentError("this worker cannot call the agent", error_class="client_error")
            outcome = adapter.perform(task, retry_context)
        except AgentError as exc:
            failures.append(exc)
            countdown = backoff(retry, n, exc, rng)
            attempts.append(attempt(n, began, exc.error_class, exc.message, countdown))
            if countdown is None:
                break
            retry_context = {
                "attempt": n,
                "error_class": exc.error_class,
                "message": exc.message[:500],
                **exc.adjust,
            }
            if remote:
                hold_or_keep(task.run_id, countdown + timeout, contribution, attempts)
            time.sleep(countdown)
        else:
            attempts.append(attempt(n, began, "", "", None))
            return Result(contribution, outcome, attempts, started, failures=failures)
    return Result(contribution, None, attempts, started, failures=failures)


def attempt(n: int, began, error_class: str, message: str, countdown: float | None) -> dict:
    return {
        "n": n,
        "started": began.isoformat(),
        "error_class": error_class,
        "message": message[:500],
        "countdown_ms": None if countdown is None else round(countdown * 1000, 3),
    }


def backoff(retry: Retry, n: int, exc: AgentError, rng: random.Random) -> float | None:
    """Seconds to wait before attempt n + 1, or None when there is none (CONCEPTS 56 to 58).

    delay_n = min(cap, base·2^(n-1)), and with jitter a uniform draw from [0, delay_n] (full
    jitter). A 429's Retry-After is a floor; one beyond the cap ends the call instead, since
    asking sooner would be refused again and waiting longer would pass the policy's cap.
    """
    if not exc.retryable or n >= retry.max_attempts:
        return None
    delay = min(retry.cap_ms, retry.base_ms * 2 ** (n - 1)) / 1000
    wait = rng.uniform(0, delay) if retry.jitter else delay
    if exc.retry_after is not None:
        if exc.retry_after > retry.cap_ms / 1000:
            return None
        wait = max(wait, exc.retry_after)
    return wait


def resumed_context(attempts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A call taken over from a dead worker carries on from its last recorded failure."""
    if not attempts or not attempts[-1].get("error_class"):
        return None
    last = attempts[-1]
    return {"attempt": last["n"], "error_class": last["error_class"], "message": last["message"]}


def hold_or_keep(run_id: int, seconds: float, contribution: Contribution, attempts: list) -> None:
    """hold(); when the run may not go on, the attempts made so far are kept on the call,
    still running, so that it resumes after them (numbered on, with the last error)."""
    try:
        hold(run_id, seconds)
    except StepAborted:
        if contribution.pk is not None and len(attempts) > len(contribution.attempts):
            Contribution.objects.filter(
                pk=contribution.pk, status=Status.RUNNING, iteration__run__lease_worker=worker()
            ).update(attempts=attempts)
        raise


def hold(run_id: int, seconds: float) -> None:
    """Before a remote call: a fresh read of the run must still let it proceed (a halt
    committed since the step began stops the call: DESIGN.md H1), and our lease must cover
    the call, which can outlast LOOP_LEASE_SECONDS (a compare-and-set on our lease)."""
    run = LoopRun.objects.get(pk=run_id)
    if run.lease_worker != worker() or not gates.may_proceed(run):
        raise StepAborted
    until = timezone.now() + timedelta(seconds=seconds) + LEASE
    ours = LoopRun.objects.filter(pk=run_id, lease_worker=worker())
    if not ours.update(lease_expires_at=until):
        raise StepAborted  # another worker took the run over meanwhile


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
        seen = {key or name for key, name in called.values_list("call_key", "blueprint__name")}
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
            seen.add(request.call_key)
            child = services.create_run(
                BLUEPRINTS[request.blueprint],
                Blueprint.objects.get(name=request.blueprint),
                run.domain,
                input=request.input,
                parent=run,
                spawned_by=iteration,
                budget=budget,
                call_key=request.call_key,
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


def beam(run: LoopRun, spec: BlueprintSpec, iteration: Iteration) -> list[Spawn]:
    """Tree of Thoughts (CONCEPTS 62): a child for each of the `beam` best thoughts the
    previous phase ranked, the rest pruned; none at the depth bound, where the run is a leaf
    and its best thought stands (judge)."""
    phase = spec.phases[iteration.phase]
    bound = min(MAX_STACK_DEPTH - 1, spec.max_depth if spec.max_depth is not None else 99)
    if run.depth + 1 > bound:
        return []
    ranked = run.context.get("phases", {}).get(spec.phases[iteration.phase - 1].name) or []
    kept, pruned = ranked[: phase.beam], ranked[phase.beam :]
    with transaction.atomic():
        services.events_write(
            run.root_id,
            [
                (
                    run.pk,
                    "thoughts.pruned",
                    {
                        "kept": [t["agent"] for t in kept],
                        "pruned": [t["agent"] for t in pruned],
                        "layer": "validation",
                    },
                )
            ],
        )
    child = phase.call[0]
    return [
        Spawn(child, {"thought": t["output"], "score": t["score"]}, key=f"{child}#{i}")
        for i, t in enumerate(kept, start=1)
    ]


def spawn_refusal(run: LoopRun, spec: BlueprintSpec, request: Spawn, seen: set[str]) -> str:
    if request.blueprint not in spec.children:
        return f"{request.blueprint!r} is not a declared child of {spec.name!r}"
    if request.call_key in seen:
        return f"{request.call_key!r} was already called in this iteration"
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
