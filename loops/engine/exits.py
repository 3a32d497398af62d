"""How an iteration ends a run, or hands it on: exits, the result, the return."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from loops import services
from loops.declare import BlueprintSpec
from loops.engine.lease import Events, Reason, State, locked
from loops.models import Iteration, LoopRun


def carry_on(run: LoopRun, spec: BlueprintSpec, events: Events) -> None:
    """Inside the transaction holding the run: a resource exit, or the next step."""
    if resource_exit(run, spec, timezone.now(), events):
        return
    run.updated_at = timezone.now()
    run.lease_worker, run.lease_expires_at = "", None  # the next step may claim at once
    run.save(update_fields=["phase", "context", "updated_at", "lease_worker", "lease_expires_at"])
    services.enqueue(run.pk)


def resource_exit(run: LoopRun, spec: BlueprintSpec, now: datetime, events=None) -> bool:
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
        finish(run, State.EXHAUSTED, reason, detail, events, best_so_far(run))
        return True
    with transaction.atomic():
        held, events = locked(run.pk), []
        finish(held, State.EXHAUSTED, reason, detail, events, best_so_far(held))
        services.events_write(held.root_id, events)
    return True


def best_so_far(run: LoopRun) -> Any:
    if "best" in run.context:  # the highest-scoring result, not merely the last (CONCEPTS 54)
        return run.context["best"]["result"]
    last = run.iterations.filter(outcome=Iteration.Outcome.VALIDATED).order_by("-number").first()
    return last.merged if last else None


def mark_closed(iteration: Iteration, outcome: str, rationale: str) -> None:
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


def finish(run, state: str, reason: str, detail: str, events: Events, result=None) -> None:
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
    services.stack_changed(run.domain_id)
