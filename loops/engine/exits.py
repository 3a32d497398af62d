"""How an iteration ends a run, or hands it on: exits, the result, the return to the parent.
All of it inside a step's transaction, on the locked run; the step's write saves it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from loops.engine import budget
from loops.engine.lease import LEASE, Reason, State
from loops.engine.step import Step
from loops.models import Iteration, LoopRun
from loops.services import child_returned, enqueue, stack_changed
from loops.specs import BlueprintSpec
from loops.trace import Trace
from realms import frames


def carry_on(step: Step, run: LoopRun, trace: Trace) -> None:
    """A resource exit, or the next step: in this task while its slice lasts (the lease
    kept), else by a task sent after commit (the lease given up)."""
    assert step.spec is not None
    if exit := resource_exit(run, step.spec, timezone.now()):
        exhaust(step, run, trace, *exit)
        return
    run.updated_at = timezone.now()
    if step.go_on_here():
        step.kept = True
        # Extended only once half of it is gone: lease_expires_at is indexed (the reaper's
        # looprun_live), so a write that moves it updates every index of the run's row, and
        # one that leaves it can be a HOT update.
        if run.lease_expires_at is None or run.lease_expires_at - run.updated_at < LEASE / 2:
            run.lease_expires_at = run.updated_at + LEASE
    else:
        run.lease_worker, run.lease_expires_at = "", None  # the next step may claim at once
        enqueue(run.pk)


def resource_exit(run: LoopRun, spec: BlueprintSpec, now: datetime) -> tuple[str, str] | None:
    """Max iterations, deadline or budget reached: the exit reason and its detail (CONCEPTS
    54, 67); the run then ends exhausted, with the best result so far."""
    exits = spec.policy.exits
    if exits.max_iterations is not None and run.iteration >= exits.max_iterations:
        return Reason.MAX_ITERATIONS, f"{run.iteration} iterations"
    if run.deadline_at is not None and now >= run.deadline_at:
        return Reason.DEADLINE, f"deadline {run.deadline_at.isoformat()}"
    if run.budget is not None and run.cost >= run.budget:
        return Reason.BUDGET, f"cost {run.cost} of budget {run.budget}"
    return None


def exhaust(
    step: Step,
    run: LoopRun,
    trace: Trace,
    reason: str,
    detail: str,
    *,
    iteration: Iteration | None = None,
    wanted: float = 0.0,
) -> None:
    """A resource exit: the run ends exhausted with its best result so far; or, out of
    budget under on_budget="ask", it first asks a person for more (loops.engine.budget;
    wanted: what the calls it could not afford were estimated to cost)."""
    assert step.spec is not None
    if reason == Reason.BUDGET and step.spec.policy.on_budget == "ask":
        why_not = budget.ask(run, step.spec, trace, detail, iteration=iteration, wanted=wanted)
        if not why_not:
            return
        detail = f"{detail}; not asked: {why_not}"
    finish(run, trace, State.EXHAUSTED, reason, detail, result=best_so_far(run))


def best_so_far(run: LoopRun) -> Any:
    if "best" in run.context:  # the highest-scoring result, not merely the last (CONCEPTS 54)
        return run.context["best"]["result"]
    last = run.iterations.filter(outcome=Iteration.Outcome.VALIDATED).order_by("-number").first()
    return last.merged if last else None


def mark_closed(iteration: Iteration, outcome: str, rationale: str) -> None:
    iteration.status, iteration.outcome = Iteration.Status.CLOSED, outcome
    iteration.rationale, iteration.closed_at = rationale, timezone.now()


def finish(
    run: LoopRun, trace: Trace, state: str, reason: str, detail: str, *, result: Any = None
) -> None:
    """End the run, and return to the parent (CONCEPTS 38)."""
    run.move_to(state)
    run.exit_reason, run.exit_detail, run.result = reason, detail, result
    trace.add(run.pk, "run.exited", {"state": state, "exit_reason": reason})
    if run.parent_id:
        child_returned(child=run, trace=trace)
    else:
        frames.origin_notify(run)  # a run another realm asked for returns to it
    stack_changed(run.domain_id)
