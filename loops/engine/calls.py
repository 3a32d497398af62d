"""Step 2: the selected agents' calls, outside any transaction, each inside the retry layer
(Loopcraft L1, CONCEPTS 55 to 59)."""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from common import backoff as waits
from common.backoff import RNG
from common.db import prepared_cursor
from loops.agents import AgentError, adapter_for
from loops.engine.broadcast import callable_here, task_for
from loops.engine.lease import LEASE, Status, StepAborted, worker
from loops.engine.results import Result, apply_results
from loops.engine.step import Step
from loops.engine.tx import step_tx
from loops.engine.writes import write_close
from loops.messages import Task
from loops.models import Contribution, Iteration
from loops.specs import BlueprintSpec, Retry
from oversight import gates

__all__ = ["RNG", "AgentError", "Result", "backoff", "hold", "perform", "perform_claimed"]


def perform_claimed(
    step: Step, iteration: Iteration, calls: list[Contribution]
) -> list[Result] | None:
    """Make the calls this step claimed (or, after a wait or a crash, those left running)
    that this worker can make; None while others are still out (remote agents answer
    through the API, and their answer steps the run again)."""
    spec = step.spec
    assert spec is not None
    feedback = iteration.broadcast.get("feedback", [])
    task = task_for(step.run, spec, iteration.number, iteration.phase, feedback)
    results: list[Result] = []
    try:
        for call in calls:
            if call.status == Status.RUNNING and callable_here(call.agent):
                results.append(perform(spec, call, task))
    except StepAborted:
        # A halt (or a lost lease) stopped a remote call before it started: keep the calls
        # already made, held back from the merge, and stop here (DESIGN.md H1).
        record(step, results)
        raise
    done = {r.contribution.pk for r in results}
    if any(not c.is_terminal and c.pk not in done for c in calls):
        record(step, results)
        return None
    return results


def perform(
    spec: BlueprintSpec,
    contribution: Contribution,
    task: Task,
    *,
    rng: random.Random = RNG,
    keep_lease: Callable[[float], None] | None = None,
) -> Result:
    """One agent call with its attempts: the retry layer.

    1. Before each attempt of a remote call, re-read the run: if the gate closed (a halt, a
       breaker, a pause) or our lease is gone, make no call and stop (StepAborted), leaving
       the attempt unrecorded; else extend the lease over the call's timeout.
    2. Call the agent; record the attempt {n, started, error_class, message, countdown_ms}.
    3. A retryable error waits countdown (backoff()), then tries again with retry_context
       naming the error, up to the policy's max_attempts; any other error ends the call.
    """
    keep_lease = keep_lease or functools.partial(hold, task.run_id)
    # A remote adapter that makes several calls in one attempt (ReAct) holds the lease over
    # each of them the same way.
    adapter = adapter_for(contribution.agent, keep_lease=keep_lease)
    remote = adapter is not None and adapter.remote
    timeout = adapter.timeout_s if adapter is not None else 0.0
    retry, attempts, started = spec.policy.retry, list(contribution.attempts), timezone.now()
    retry_context = resumed_context(attempts)
    failures: list[AgentError] = []
    for n in range(len(attempts) + 1, retry.max_attempts + 1):
        if remote:
            _hold_or_keep(keep_lease, timeout, contribution, attempts)
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
                _hold_or_keep(keep_lease, countdown + timeout, contribution, attempts)
            time.sleep(countdown)
        else:
            attempts.append(attempt(n, began, "", "", None))
            return Result(contribution, outcome, attempts, started, failures=failures)
    return Result(contribution, None, attempts, started, failures=failures)


def attempt(n: int, began: datetime, error_class: str, message: str, countdown) -> dict:
    return {
        "n": n,
        "started": began.isoformat(),
        "error_class": error_class,
        "message": message[:500],
        "countdown_ms": None if countdown is None else round(countdown * 1000, 3),
    }


def backoff(retry: Retry, n: int, exc: AgentError, rng: random.Random) -> float | None:
    """Seconds to wait before attempt n + 1, or None when there is none (CONCEPTS 56 to 58):
    common.backoff's full jitter (or its ceiling without jitter). A 429's Retry-After is a
    floor; one beyond the cap ends the call instead, since asking sooner would be refused
    again and waiting longer would pass the policy's cap."""
    if not exc.retryable or n >= retry.max_attempts:
        return None
    wait = waits.backoff(
        n,
        base=retry.base_ms / 1000,
        cap=retry.cap_ms / 1000,
        jitter="full" if retry.jitter else "none",
        rng=rng,
    )
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


def _hold_or_keep(
    keep_lease: Callable[[float], None], seconds: float, contribution: Contribution, attempts: list
) -> None:
    """keep_lease(); when the run may not go on, the attempts made so far are kept on the call,
    still running, so that it resumes after them (numbered on, with the last error)."""
    try:
        keep_lease(seconds)
    except StepAborted:
        if contribution.pk is not None and len(attempts) > len(contribution.attempts):
            Contribution.objects.filter(
                pk=contribution.pk, status=Status.RUNNING, iteration__run__lease_worker=worker()
            ).update(attempts=attempts)
        raise


# Our lease extended over the call, in one statement, only while the run may still go on:
# running, ours, and the gate open (a halt committed since the step began stops the call).
_HOLD = f"""
UPDATE loops_looprun r SET lease_expires_at = %(until)s
FROM (SELECT {gates.stop_columns("s")} FROM loops_looprun s WHERE s.id = %(run)s) gate
WHERE r.id = %(run)s AND r.state = 'running' AND r.lease_worker = %(me)s
  AND gate.stop_halt IS NULL AND gate.stop_breaker IS NULL
"""


def hold(run_id: int, seconds: float) -> None:
    """Before a remote call (DESIGN.md H1): a fresh read must still let the run proceed, and
    our lease must cover the call, which can outlast LOOP_LEASE_SECONDS."""
    until = timezone.now() + timedelta(seconds=seconds) + LEASE
    with prepared_cursor() as cursor:
        cursor.execute(_HOLD, {"run": run_id, "me": worker(), "until": until})
        if cursor.rowcount != 1:
            raise StepAborted  # stopped, or another worker took the run over meanwhile


def record(step: Step, results: list[Result]) -> None:
    """Write results in their own transaction; if the run stopped meanwhile, they are held
    back from the merge until it may proceed again (CONCEPTS 42)."""
    if not results:
        return
    with step_tx(step.run.pk, agents=[r.contribution.agent_id for r in results]) as tx:
        step.run = tx.run
        apply_results(tx, results, held=not tx.may)
        write_close(tx.run, tx.trace, results=[r.contribution for r in results])
    if not tx.may:
        raise StepAborted
