"""The engine's writes: each transaction of a step is one statement (data-modifying CTEs)
from the instances it changed in memory, plus the trace (loops.trace), instead of an ORM
query per row (issue 14: the ORM's compilation was most of an iteration's cost).

Every writer of a run's row holds its row lock (the engine's transactions lock it first),
so the run is written whole from the locked, fresh instance: what it says is the truth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from common.db import prepared_cursor
from loops.models import Bid, Contribution, Iteration, LoopRun
from loops.trace import TRACE_CTES, Trace

_encode = DjangoJSONEncoder().encode

# The run's columns a step may change; written from the locked instance.
_RUN = (
    "state",
    "prior_state",
    "paused_by",
    "phase",
    "iteration",
    "context",
    "result",
    "exit_reason",
    "exit_detail",
    "cost",
    "cost_reserved",
    "tokens",
    "lease_worker",
    "lease_expires_at",
    "started_at",
    "finished_at",
    "updated_at",
)
_JSON = {"context", "result", "broadcast", "merged", "validation", "feedback"}


def _set(prefix: str, columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = %({prefix}{c})s" + ("::jsonb" if c in _JSON else "") for c in columns)


_RUN_UPDATE = f"UPDATE loops_looprun SET {_set('run_', _RUN)} WHERE id = %(run_id)s"


def _json(value: Any) -> str | None:
    return None if value is None else _encode(value)


def _run_params(run: LoopRun) -> dict[str, Any]:
    params = {f"run_{c}": getattr(run, c) for c in _RUN}
    params["run_context"], params["run_result"] = _json(run.context), _json(run.result)
    params["run_id"] = run.pk
    return params


# An iteration's columns once it is opened, and those a step changes afterwards.
_ITERATION = (
    "run_id",
    "number",
    "phase",
    "phase_name",
    "status",
    "outcome",
    "broadcast",
    "bid_window_ends_at",
    "gather_deadline_at",
    "merged",
    "validation",
    "feedback",
    "rationale",
    "started_at",
    "closed_at",
)
_ITERATION_LATER = (
    "status",
    "outcome",
    "merged",
    "validation",
    "feedback",
    "rationale",
    "closed_at",
)


def _iteration_params(iteration: Iteration) -> dict[str, Any]:
    params = {f"it_{c}": getattr(iteration, c) for c in _ITERATION}
    for c in ("broadcast", "validation", "feedback"):
        params[f"it_{c}"] = _encode(getattr(iteration, c))
    params["it_merged"], params["it_id"] = _json(iteration.merged), iteration.pk
    return params


_ITERATION_INSERT = (
    f"INSERT INTO loops_iteration ({', '.join(_ITERATION)}) VALUES ("
    + ", ".join(f"%(it_{c})s" + ("::jsonb" if c in _JSON else "") for c in _ITERATION)
    + ") RETURNING id"
)
_ITERATION_UPDATE = (
    f"UPDATE loops_iteration SET {_set('it_', _ITERATION_LATER)} WHERE id = %(it_id)s"
)

_BIDS = """
INSERT INTO loops_bid (iteration_id, agent_id, decision, confidence, est_cost, reason,
                       started_at, received_at, late, selected, selection_reason)
SELECT {iteration}, b.agent_id, b.decision, b.confidence, b.est_cost, b.reason, b.started_at,
       b.received_at, b.late, b.selected, b.selection_reason
FROM unnest(%(bid_agent)s::bigint[], %(bid_decision)s::text[], %(bid_confidence)s::float8[],
            %(bid_est_cost)s::float8[], %(bid_reason)s::text[], %(bid_started_at)s::timestamptz[],
            %(bid_received_at)s::timestamptz[], %(bid_late)s::bool[], %(bid_selected)s::bool[],
            %(bid_selection_reason)s::text[])
     AS b(agent_id, decision, confidence, est_cost, reason, started_at, received_at, late,
          selected, selection_reason)
"""


def _bid_params(bids: Sequence[Bid]) -> dict[str, list[Any]]:
    return {
        "bid_agent": [b.agent_id for b in bids],
        "bid_decision": [b.decision for b in bids],
        "bid_confidence": [b.confidence for b in bids],
        "bid_est_cost": [b.est_cost for b in bids],
        "bid_reason": [b.reason for b in bids],
        "bid_started_at": [b.started_at for b in bids],
        "bid_received_at": [b.received_at for b in bids],
        "bid_late": [b.late for b in bids],
        "bid_selected": [b.selected for b in bids],
        "bid_selection_reason": [b.selection_reason for b in bids],
    }


# The claimed calls: one row per winner, running (in process) or pending (a remote agent's).
_CALLS = """
INSERT INTO loops_contribution (iteration_id, agent_id, status, output, error_class, error,
    attempts, est_cost, confidence, cost, tokens, latency_ms, validated, late, held, counted,
    started_at, finished_at)
SELECT {iteration}, c.agent_id, c.status, NULL::jsonb, c.error_class, c.error, '[]'::jsonb,
       c.est_cost, c.confidence, 0, 0, NULL::float8, NULL::bool, false, false, false,
       c.started_at, NULL::timestamptz
FROM unnest(%(call_agent)s::bigint[], %(call_status)s::text[], %(call_error_class)s::text[],
            %(call_error)s::text[], %(call_est_cost)s::float8[], %(call_confidence)s::float8[],
            %(call_started_at)s::timestamptz[])
     AS c(agent_id, status, error_class, error, est_cost, confidence, started_at)
RETURNING id, agent_id
"""


def _call_params(calls: Sequence[Contribution]) -> dict[str, list[Any]]:
    return {
        "call_agent": [c.agent_id for c in calls],
        "call_status": [c.status for c in calls],
        "call_error_class": [c.error_class for c in calls],
        "call_error": [c.error for c in calls],
        "call_est_cost": [c.est_cost for c in calls],
        "call_confidence": [c.confidence for c in calls],
        "call_started_at": [c.started_at for c in calls],
    }


_CALL_IDS = "(SELECT coalesce(json_agg(json_build_array(agent_id, id)), '[]')::text FROM calls)"

# The opening: the iteration, its bids (with their selection when everyone answered at
# once) and the claimed calls, and the run — one statement.
_OPEN = f"""
WITH it AS ({_ITERATION_INSERT}),
bids AS ({_BIDS.format(iteration="(SELECT id FROM it)")}),
calls AS ({_CALLS.format(iteration="(SELECT id FROM it)")}),
run AS ({_RUN_UPDATE})
SELECT (SELECT id FROM it), {_CALL_IDS}
"""

# The selection after the bid window: the silent agents' declines, every bid's selection,
# the claimed calls, the iteration and the run — one statement.
_SELECTION = f"""
WITH silent AS ({_BIDS.format(iteration="%(it_id)s")} ON CONFLICT (iteration_id, agent_id) DO NOTHING),
chosen AS (
    UPDATE loops_bid b SET selected = s.selected, selection_reason = s.selection_reason
    FROM unnest(%(chosen_agent)s::bigint[], %(chosen_selected)s::bool[],
                %(chosen_reason)s::text[]) AS s(agent_id, selected, selection_reason)
    WHERE b.iteration_id = %(it_id)s AND b.agent_id = s.agent_id
),
calls AS ({_CALLS.format(iteration="%(it_id)s")}),
it AS ({_ITERATION_UPDATE}),
run AS ({_RUN_UPDATE})
SELECT {_CALL_IDS}
"""  # noqa: E501

# The results of calls, one row each (what apply_results set on the instances).
_RESULTS = """
UPDATE loops_contribution AS c
SET status = r.status, output = r.output, cost = r.cost, tokens = r.tokens,
    attempts = r.attempts, finished_at = r.finished_at, held = r.held, late = r.late,
    latency_ms = r.latency_ms, error_class = r.error_class, error = r.error
FROM unnest(%(res_id)s::bigint[], %(res_status)s::text[], %(res_output)s::jsonb[],
            %(res_cost)s::float8[], %(res_tokens)s::int[], %(res_attempts)s::jsonb[],
            %(res_finished_at)s::timestamptz[], %(res_held)s::bool[], %(res_late)s::bool[],
            %(res_latency_ms)s::float8[], %(res_error_class)s::text[], %(res_error)s::text[])
     AS r(id, status, output, cost, tokens, attempts, finished_at, held, late, latency_ms,
          error_class, error)
WHERE c.id = r.id
"""


def _result_params(calls: Sequence[Contribution]) -> dict[str, list[Any]]:
    return {
        "res_id": [c.pk for c in calls],
        "res_status": [c.status for c in calls],
        "res_output": [_json(c.output) for c in calls],
        "res_cost": [c.cost for c in calls],
        "res_tokens": [c.tokens for c in calls],
        "res_attempts": [_encode(c.attempts) for c in calls],
        "res_finished_at": [c.finished_at for c in calls],
        "res_held": [c.held for c in calls],
        "res_late": [c.late for c in calls],
        "res_latency_ms": [c.latency_ms for c in calls],
        "res_error_class": [c.error_class for c in calls],
        "res_error": [c.error for c in calls],
    }


@cache
def _close(results: bool, iteration: bool) -> str:
    parts = ([f"calls AS ({_RESULTS})"] if results else []) + (
        [f"it AS ({_ITERATION_UPDATE})"] if iteration else []
    )
    return (f"WITH {', '.join(parts)} " if parts else "") + _RUN_UPDATE


def _execute(sql: str, params: dict[str, Any], trace: Trace) -> tuple[Any, ...] | None:
    """Run a write, with the transaction's events so far riding in it: the last write of a
    transaction leaves step_tx nothing to write (one statement fewer per transaction)."""
    if trace.events:
        sql = _with_trace(sql)
        params = {**params, **trace.take_params()}
    with prepared_cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone() if cursor.description else None


@cache
def _with_trace(sql: str) -> str:
    rest = sql.strip()
    if rest.startswith("WITH "):
        return f"WITH {TRACE_CTES}, {rest.removeprefix('WITH ')}"
    return f"WITH {TRACE_CTES} {rest}"


def _claimed(found: str, calls: Sequence[Contribution], iteration: Iteration) -> None:
    ids = dict(json.loads(found))
    for call in calls:
        call.pk, call.iteration = ids[call.agent_id], iteration


def write_open(
    run: LoopRun,
    iteration: Iteration,
    bids: Sequence[Bid],
    calls: Sequence[Contribution],
    trace: Trace,
) -> None:
    """Insert the iteration, its bids and claimed calls, and write the run; sets their ids."""
    row = _execute(
        _OPEN,
        {
            **_run_params(run),
            **_iteration_params(iteration),
            **_bid_params(bids),
            **_call_params(calls),
        },
        trace,
    )
    assert row is not None
    iteration.pk = row[0]
    _claimed(row[1], calls, iteration)


def write_selection(
    run: LoopRun,
    iteration: Iteration,
    silent: Sequence[Bid],
    chosen: Sequence[Bid],
    calls: Sequence[Contribution],
    trace: Trace,
) -> None:
    """After the bid window: the silent agents' declines, the selection of the bids already
    there, the claimed calls, the iteration and the run; sets the calls' ids."""
    row = _execute(
        _SELECTION,
        {
            **_run_params(run),
            **_iteration_params(iteration),
            **_bid_params(silent),
            "chosen_agent": [b.agent_id for b in chosen],
            "chosen_selected": [b.selected for b in chosen],
            "chosen_reason": [b.selection_reason for b in chosen],
            **_call_params(calls),
        },
        trace,
    )
    assert row is not None
    _claimed(row[0], calls, iteration)


def write_close(
    run: LoopRun,
    trace: Trace,
    *,
    results: Sequence[Contribution] = (),
    iteration: Iteration | None = None,
) -> None:
    """The calls' results, the iteration as it is now (closed, or waiting for children),
    and the run."""
    params = _run_params(run)
    if results:
        params.update(_result_params(results))
    if iteration is not None:
        params.update(_iteration_params(iteration))
    _execute(_close(bool(results), iteration is not None), params, trace)


def write_run(run: LoopRun, trace: Trace) -> None:
    _execute(_RUN_UPDATE, _run_params(run), trace)
