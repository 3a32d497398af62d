"""The meta-learning layer (Loopcraft L3; CONCEPTS 53, 64, 65).

Recording: when an iteration closes, the engine writes an `outcome.recorded` event naming, per
contribution, success (completed and in the validated merge) or failure (failed, late, or in a
merge the validators rejected). `stats_fold` then counts every terminal contribution of a
closed iteration into its agent's `AgentStat(agent, task_type)` exactly once: the rows are
claimed by flipping `Contribution.counted` in the transaction that updates the posterior, so
a step retried on another worker, or two sweeps at once, cannot count one twice. Folding in a
sweep rather than in the step keeps the busy agents' stat rows out of every step's locks.

Selecting: `thompson` draws θ ~ Beta(alpha, beta) per bidder and ranks by θ * confidence; the reason
on each bid names the draw, so "why chosen" can be shown.
"""

from __future__ import annotations

import random
from typing import Any

from django.db import connection, transaction

from loops.models import Contribution, Iteration

# The iteration outcomes that say something about its contributors (not no_quorum, not
# abandoned). outcome_of and _FOLD below apply the same rule, in Python and in SQL.
_COUNTED_OUTCOMES = {
    Iteration.Outcome.VALIDATED,
    Iteration.Outcome.REJECTED,
    Iteration.Outcome.MERGE_FAILED,
}


def outcome_of(contribution: Contribution, iteration_outcome: str) -> bool | None:
    """True (alpha+1), False (beta+1), or None when it says nothing about the agent (the run was
    cancelled under it, or the call was refused for budget before it ran)."""
    if contribution.error_class == "budget" or iteration_outcome not in _COUNTED_OUTCOMES:
        return None
    if contribution.status != Contribution.Status.COMPLETED or contribution.late:
        return False
    return iteration_outcome == Iteration.Outcome.VALIDATED


# One statement per sweep: claim up to `limit` uncounted contributions of closed iterations
# (SKIP LOCKED: a concurrent sweep takes others), aggregate them per (agent, task type) and
# upsert the posteriors, with running means of latency and cost.
_FOLD = """
WITH claimed AS (
    SELECT c.id FROM loops_contribution c
    JOIN loops_iteration i ON i.id = c.iteration_id
    WHERE c.counted = false AND i.status = 'closed'
    ORDER BY c.id
    LIMIT %(limit)s
    FOR UPDATE OF c SKIP LOCKED
),
marked AS (
    UPDATE loops_contribution c SET counted = true
    FROM claimed WHERE c.id = claimed.id
    RETURNING c.id, c.agent_id, c.iteration_id, c.status, c.late, c.error_class,
              c.latency_ms, c.cost
),
judged AS (
    SELECT m.agent_id, i.broadcast ->> 'task_type' AS task_type, m.latency_ms, m.cost,
           CASE
               WHEN m.error_class = 'budget' OR i.outcome <> ALL(%(counted)s) THEN NULL
               WHEN m.status <> 'completed' OR m.late THEN false
               ELSE i.outcome = 'validated'
           END AS ok
    FROM marked m JOIN loops_iteration i ON i.id = m.iteration_id
),
totals AS (
    SELECT agent_id, task_type,
           count(*) FILTER (WHERE ok) AS wins,
           count(*) FILTER (WHERE NOT ok) AS losses,
           count(*) FILTER (WHERE ok IS NOT NULL) AS n,
           coalesce(sum(latency_ms) FILTER (WHERE ok IS NOT NULL), 0) AS latency,
           coalesce(sum(cost) FILTER (WHERE ok IS NOT NULL), 0) AS cost
    FROM judged GROUP BY agent_id, task_type
    HAVING count(*) FILTER (WHERE ok IS NOT NULL) > 0
),
upsert AS (
INSERT INTO loops_agentstat AS s
    (agent_id, task_type, alpha, beta, n, mean_latency_ms, mean_cost, updated_at)
SELECT agent_id, task_type, 1 + wins, 1 + losses, n, latency / n, cost / n, now()
FROM totals
ON CONFLICT (agent_id, task_type) DO UPDATE SET
    alpha = s.alpha + excluded.alpha - 1,
    beta = s.beta + excluded.beta - 1,
    mean_latency_ms = (s.mean_latency_ms * s.n + excluded.mean_latency_ms * excluded.n)
                      / (s.n + excluded.n),
    mean_cost = (s.mean_cost * s.n + excluded.mean_cost * excluded.n) / (s.n + excluded.n),
    n = s.n + excluded.n,
    updated_at = now()
RETURNING 1
)
SELECT count(*) FROM marked
"""


FOLD_BATCH = 5000


@transaction.atomic(durable=True)
def stats_fold(limit: int = FOLD_BATCH) -> int:
    """Count the finished contributions of closed iterations into the posteriors; returns how
    many contributions it claimed (the beat sweep repeats while it is busy)."""
    with connection.cursor() as cursor:
        cursor.execute(_FOLD, {"limit": limit, "counted": [str(o) for o in _COUNTED_OUTCOMES]})
        return cursor.fetchone()[0]


def thompson(
    bids: list[Any], stats: dict[int, tuple[float, float]], rng: random.Random
) -> list[tuple[Any, float, float]]:
    """(bid, θ, score) per bidder, best first: θ ~ Beta(alpha, beta) of the agent for this task type
    (a uniform prior for an agent never seen), score θ * confidence."""
    drawn = []
    for bid in bids:
        alpha, beta = stats.get(bid.agent_id, (1.0, 1.0))
        theta = rng.betavariate(alpha, beta)
        drawn.append((bid, theta, theta * (bid.confidence or 0.0)))
    return sorted(drawn, key=lambda d: (-d[2], d[0].received_at, d[0].agent_id))


def rng_for(run_id: int, iteration: int) -> random.Random:
    """A generator seeded by the run and iteration: a replayed step draws the same."""
    return random.Random(run_id * 1_000_003 + iteration)  # noqa: S311 (not cryptographic)
