"""The results of agent calls, applied to their rows (in memory) in the transaction holding
the run, with what they feed: the run's cost, the failure patterns and the breakers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from loops.engine.lease import Status
from loops.engine.tx import Tx
from loops.messages import Outcome
from loops.models import Contribution
from oversight.services.breakers import Call, breakers_record_calls
from oversight.services.patterns import failures_record

if TYPE_CHECKING:
    from loops.agents.base import AgentError


@dataclass
class Result:
    """One call, made outside any transaction, waiting to be recorded."""

    contribution: Contribution
    outcome: Outcome | None
    attempts: list[dict[str, Any]]
    started: datetime
    finished: datetime = field(default_factory=timezone.now)
    # The failed attempts' errors: what they used before failing (a ReAct loop's tokens and
    # steps) counts for the call as well.
    failures: list[AgentError] = field(default_factory=list)


def apply_results(tx: Tx, results: list[Result], *, held: bool) -> None:
    """Set each call's result on its row (written by the step's statement), settle its cost
    on the run, and feed the failure patterns and the breakers (H3)."""
    run = tx.run
    reserved, actual, tokens = 0.0, 0.0, 0
    for r in results:
        c, o = r.contribution, r.outcome
        c.attempts, c.finished_at, c.held = r.attempts, r.finished, held
        c.late = r.finished > c.iteration.gather_deadline_at
        c.latency_ms = (r.finished - r.started).total_seconds() * 1000
        used: list[AgentError | Outcome] = [*r.failures, *([o] if o is not None else [])]
        c.cost, c.tokens = sum(u.cost for u in used), sum(u.tokens for u in used)
        if o is not None:
            c.status, c.output = Status.COMPLETED, o.output
        else:
            last = r.attempts[-1] if r.attempts else {}
            c.status, c.error_class = Status.FAILED, last.get("error_class", "")
            c.error = last.get("message", "")
        reserved, actual, tokens = reserved + c.est_cost, actual + c.cost, tokens + c.tokens
        # The agent's own steps (CONCEPTS 61), inside the call, before its answer.
        for step in (step for u in used for step in u.trace):
            kind, payload = step["type"], {k: v for k, v in step.items() if k != "type"}
            tx.trace.add(run.pk, kind, {**payload, "agent": c.agent_id})
        payload = {
            "agent": c.agent_id,
            "tokens": c.tokens,
            "late": c.late,
            "held": held,
            "attempts": len(r.attempts),
            "layer": "retry",
        }
        tx.trace.add(run.pk, "agent.call.responded" if o else "agent.call.errored", payload)
    run.cost_reserved -= reserved
    run.cost, run.tokens = run.cost + actual, run.tokens + tokens
    # Identical failures repeating raise one advisory alert, not one each (CONCEPTS 66).
    failures_record(
        (r.contribution.agent_id, r.contribution.error_class, r.contribution.error)
        for r in results
        if r.outcome is None and r.contribution.error_class != "budget"
    )
    if tx.breakers:  # every finished call counts for its agent's, blueprint's, domain's (H3)
        breakers_record_calls(
            run,
            [
                Call(
                    r.contribution.agent_id,
                    ok=r.outcome is not None,
                    cost=r.contribution.cost,
                    latency_ms=r.contribution.latency_ms or 0.0,
                    metrics=r.outcome.metrics if r.outcome is not None else None,
                )
                for r in results
            ],
        )
