"""The engine's writes: each transaction of a step is one statement (data-modifying CTEs)
from the instances it changed in memory, plus the trace (loops.trace), instead of an ORM
query per row (issue 14: the ORM's compilation was most of an iteration's cost).

Every writer of a run's row holds its row lock (the engine's transactions lock it first),
so the run is written whole from the locked, fresh instance: what it says is the truth.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from common.db import prepared_cursor
from loops.models import Bid, Contribution, Iteration, LoopRun
from loops.trace import TRACE_CTES, Trace


class _Encoder(DjangoJSONEncoder):
    """Django's JSON, but a timestamp keeps its microseconds: the rows' columns are
    timestamptz, and Django's encoder cuts them to milliseconds."""

    def default(self, o: Any) -> Any:
        return o.isoformat() if isinstance(o, datetime) else super().default(o)


_encode = _Encoder().encode


def _rows(objs: Sequence[Any], columns: Sequence[str]) -> str:
    """Rows as one JSON array of objects, read back by jsonb_populate_record(set): one
    parameter for a whole row set, not one array per column (issue 14: few parameters, so
    psycopg converts each statement once per process and the server plans it once per
    connection)."""
    return _encode([{c: getattr(o, c) for c in columns} for o in objs])


def _assign(alias: str, columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = {alias}.{c}" for c in columns)


def _record(table: str, param: str) -> str:
    return f"jsonb_populate_record(NULL::{table}, %({param})s::jsonb)"


def _recordset(table: str, param: str) -> str:
    return f"jsonb_populate_recordset(NULL::{table}, %({param})s::jsonb)"


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
    "budget",  # extended when a person answers a budget question (loops.engine.budget)
    "cost",
    "cost_reserved",
    "tokens",
    "lease_worker",
    "lease_expires_at",
    "started_at",
    "finished_at",
    "updated_at",
)
_RUN_UPDATE = (
    f"UPDATE loops_looprun r SET {_assign('v', _RUN)} "
    f"FROM {_record('loops_looprun', 'run')} v WHERE r.id = v.id"
)


def _run_params(run: LoopRun) -> dict[str, Any]:
    return {"run": _encode({"id": run.pk, **{c: getattr(run, c) for c in _RUN}})}


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
    return {"it": _encode({"id": iteration.pk, **{c: getattr(iteration, c) for c in _ITERATION}})}


_ITERATION_INSERT = (
    f"INSERT INTO loops_iteration ({', '.join(_ITERATION)}) "
    f"SELECT {', '.join(_ITERATION)} FROM {_record('loops_iteration', 'it')} RETURNING id"
)
_ITERATION_UPDATE = (
    f"UPDATE loops_iteration i SET {_assign('v', _ITERATION_LATER)} "
    f"FROM {_record('loops_iteration', 'it')} v WHERE i.id = v.id"
)

_BID = (
    "agent_id",
    "decision",
    "confidence",
    "est_cost",
    "reason",
    "started_at",
    "received_at",
    "late",
    "selected",
    "selection_reason",
)
_BIDS = (
    f"INSERT INTO loops_bid (iteration_id, {', '.join(_BID)}) "
    f"SELECT {{iteration}}, {', '.join(_BID)} FROM {_recordset('loops_bid', 'bids')}"
)


def _bid_params(bids: Sequence[Bid]) -> dict[str, Any]:
    return {"bids": _rows(bids, _BID)}


# The claimed calls: one row per winner, running (in process) or pending (a remote agent's).
_CALL = ("agent_id", "status", "error_class", "error", "est_cost", "confidence", "started_at")
_CALLS = f"""
INSERT INTO loops_contribution (iteration_id, {", ".join(_CALL)}, output, attempts, cost, tokens,
    latency_ms, validated, late, held, counted, finished_at)
SELECT {{iteration}}, {", ".join(_CALL)}, NULL, '[]'::jsonb, 0, 0, NULL, NULL, false, false,
       false, NULL
FROM {_recordset("loops_contribution", "calls")}
RETURNING id, agent_id
"""


def _call_params(calls: Sequence[Contribution]) -> dict[str, Any]:
    return {"calls": _rows(calls, _CALL)}


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
    FROM {_recordset("loops_bid", "chosen")} s
    WHERE b.iteration_id = %(it_id)s AND b.agent_id = s.agent_id
),
calls AS ({_CALLS.format(iteration="%(it_id)s")}),
it AS ({_ITERATION_UPDATE}),
run AS ({_RUN_UPDATE})
SELECT {_CALL_IDS}
"""  # noqa: E501

# The results of calls, one row each (what apply_results set on the instances).
_RESULT = (
    "status",
    "output",
    "cost",
    "tokens",
    "attempts",
    "finished_at",
    "held",
    "late",
    "latency_ms",
    "error_class",
    "error",
)
_RESULTS = (
    f"UPDATE loops_contribution c SET {_assign('r', _RESULT)} "
    f"FROM {_recordset('loops_contribution', 'results')} r WHERE c.id = r.id"
)


def _result_params(calls: Sequence[Contribution]) -> dict[str, Any]:
    return {
        "results": _encode([{"id": c.pk, **{f: getattr(c, f) for f in _RESULT}} for c in calls])
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
            "it_id": iteration.pk,
            "chosen": _rows(chosen, ("agent_id", "selected", "selection_reason")),
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
