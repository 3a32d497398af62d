"""The results of agent calls, written under the run's lock (with the merge, or alone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connection
from django.utils import timezone

from loops import services
from loops.declare import Outcome
from loops.engine.lease import Events, Status
from loops.models import Contribution, LoopRun
from oversight.services.breakers import Call, breakers_record_calls
from oversight.services.patterns import failures_record

if TYPE_CHECKING:
    from loops.agents.base import AgentError


@dataclass
class Result:
    """One in-process call, made outside any transaction, waiting to be recorded."""

    contribution: Contribution
    outcome: Outcome | None
    attempts: list[dict[str, Any]]
    started: datetime
    finished: datetime = field(default_factory=timezone.now)
    # The failed attempts' errors: what they used before failing (a ReAct loop's tokens and
    # steps) counts for the call as well.
    failures: list[AgentError] = field(default_factory=list)


# Every call's result in one statement: the ORM's per-row UPDATEs cost about 1 ms of Python
# each, and its bulk_update builds a CASE per field, slower still (docs/BENCHMARKS.md).
_RESULTS_WRITE = """
UPDATE loops_contribution AS c
SET status = r.status, output = r.output, cost = r.cost, tokens = r.tokens,
    attempts = r.attempts, finished_at = r.finished_at, held = r.held, late = r.late,
    latency_ms = r.latency_ms, error_class = r.error_class, error = r.error
FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(outputs)s::jsonb[], %(costs)s::float8[],
            %(tokens)s::int[], %(attempts)s::jsonb[], %(finished)s::timestamptz[],
            %(held)s::bool[], %(late)s::bool[], %(latencies)s::float8[],
            %(error_classes)s::text[], %(errors)s::text[])
     AS r(id, status, output, cost, tokens, attempts, finished_at, held, late, latency_ms,
          error_class, error)
WHERE c.id = r.id
"""


def _results_write(rows: list[Contribution]) -> None:
    if not rows:
        return
    encoder = DjangoJSONEncoder()  # as the model's JSONFields; None stays SQL NULL
    with connection.cursor() as cursor:
        cursor.execute(
            _RESULTS_WRITE,
            {
                "ids": [c.pk for c in rows],
                "statuses": [c.status for c in rows],
                "outputs": [None if c.output is None else encoder.encode(c.output) for c in rows],
                "costs": [c.cost for c in rows],
                "tokens": [c.tokens for c in rows],
                "attempts": [encoder.encode(c.attempts) for c in rows],
                "finished": [c.finished_at for c in rows],
                "held": [c.held for c in rows],
                "late": [c.late for c in rows],
                "latencies": [c.latency_ms for c in rows],
                "error_classes": [c.error_class for c in rows],
                "errors": [c.error for c in rows],
            },
        )


def apply_results(run: LoopRun, results: list[Result], held: bool, events: Events) -> None:
    """Inside the transaction holding the run: write the calls' results, settle their cost."""
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
            events.append((run.pk, kind, {**payload, "agent": c.agent_id}))
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
    _results_write([r.contribution for r in results])
    if reserved or actual or tokens:
        services.cost_settle(run.pk, reserved=reserved, actual=actual, tokens=tokens)
        run.cost, run.tokens = run.cost + actual, run.tokens + tokens
    # Identical failures repeating raise one advisory alert, not one each (CONCEPTS 66).
    failures_record(
        (r.contribution.agent_id, r.contribution.error_class, r.contribution.error)
        for r in results
        if r.outcome is None and r.contribution.error_class != "budget"
    )
    # Every finished call counts for the breakers of its agent, blueprint and domain (H3).
    breakers_record_calls(
        run,
        (
            Call(
                r.contribution.agent_id,
                ok=r.outcome is not None,
                cost=r.contribution.cost,
                latency_ms=r.contribution.latency_ms or 0.0,
                metrics=r.outcome.metrics if r.outcome is not None else None,
            )
            for r in results
        ),
    )
