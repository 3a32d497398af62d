"""Who holds a run: the lease, taken with a compare-and-set that also reads what the step
starts from (the run, its open iteration, the gate's answer and the domain's live agents),
in one statement."""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings

from common.db import prepared_cursor
from loops.engine.rows import Rows
from loops.models import Agent, Blueprint, Contribution, Iteration, LoopRun
from oversight import gates

State = LoopRun.State
Reason = LoopRun.ExitReason
Status = Contribution.Status
LEASE = timedelta(seconds=settings.LOOP_LEASE_SECONDS)
STALE = timedelta(seconds=settings.LOOP_STALE_SECONDS)
HEARTBEAT = timedelta(seconds=settings.AGENT_HEARTBEAT_SECONDS)
HOST = socket.gethostname()


class StepAborted(Exception):
    """The run changed under us (paused, cancelled, halted, lease lost): stop quietly."""


class AudienceChanged(Exception):
    """A breaker of an agent the step meant to ask opened since the agents were read: the
    step starts again from a fresh claim (nothing was written)."""


def worker() -> str:
    """Who holds a lease: this host, process and thread (a thread runs one step at a time)."""
    return f"{HOST}:{os.getpid()}:{threading.get_ident()}"


RUNS = Rows(LoopRun, "r")
ITERATIONS = Rows(Iteration, "i")
AGENTS = Rows(
    Agent, "a", ("id", "domain_id", "name", "adapter", "config", "capabilities", "task_types")
)

# The compare-and-set (a free or expired lease, or ours: a task going on with the run it
# holds) and, in the same statement, the run, its open iteration if it has one, the gate,
# and — when an iteration is to be opened — the domain's agents that may hear a broadcast:
# online, and alive (in-process and LLM agents always; a remote one while it beats), with
# whether a breaker of theirs is not closed (those go through the gate's trial logic).
_CLAIM = f"""
WITH r AS (
    UPDATE loops_looprun SET lease_worker = %(me)s, lease_expires_at = %(until)s
    WHERE id = %(run)s AND state = 'running'
      AND (lease_worker IN ('', %(me)s) OR lease_expires_at < %(now)s)
    RETURNING *
)
SELECT {RUNS.columns}, {ITERATIONS.columns}, {gates.stop_columns("r")},
    CASE WHEN i.id IS NULL THEN (
        SELECT json_agg(json_build_array({AGENTS.columns}, EXISTS (
            SELECT 1 FROM oversight_circuitbreaker b
            WHERE b.scope = 'agent' AND b.agent_id = a.id AND b.state <> 'closed'
        )) ORDER BY a.name)::text
        FROM loops_agent a
        WHERE a.domain_id = r.domain_id AND a.status = 'online'
          AND (a.adapter IN ('python', 'llm', 'realm', 'a2a') OR a.heartbeat_at >= %(alive_since)s)
    ) END AS agents
FROM r LEFT JOIN LATERAL (
    SELECT * FROM loops_iteration WHERE run_id = r.id AND status <> 'closed'
    ORDER BY number DESC LIMIT 1
) i ON true
"""


@dataclass
class Claim:
    run: LoopRun
    iteration: Iteration | None  # the open one, if any
    stop: gates.Stop  # what stops the run (a halt or a breaker), if anything
    agents: list[Agent]  # with .breaker_not_closed; only when no iteration is open


def claim(run_id: int, now: datetime) -> Claim | None:
    """The run, now held by this worker, with what its step starts from; None if the run is
    not running or somebody else holds it."""
    params: dict[str, Any] = {
        "me": worker(),
        "until": now + LEASE,
        "run": run_id,
        "now": now,
        "alive_since": now - HEARTBEAT,
    }
    with prepared_cursor() as cursor:
        cursor.execute(_CLAIM, params)
        row = cursor.fetchone()
    if row is None:
        return None
    run = RUNS.build(row[: RUNS.width])
    run.blueprint = blueprint(run.blueprint_id)
    rest = row[RUNS.width :]
    iteration = ITERATIONS.build(rest[: ITERATIONS.width]) if rest[0] is not None else None
    halt, breaker, agents = rest[ITERATIONS.width :]
    return Claim(run, iteration, gates.stop_of(halt, breaker), _agents(agents))


def _agents(found: str | None) -> list[Agent]:
    agents = []
    for values in json.loads(found) if found else []:
        agent = AGENTS.build(values[:-1])
        agent.breaker_not_closed = values[-1]  # type: ignore[attr-defined]
        agents.append(agent)
    return agents


@lru_cache(maxsize=1024)
def blueprint(blueprint_id: int) -> Blueprint:
    """Blueprint rows are written from the declarations a process loads when it starts,
    which the engine reads from memory too (loops.declare.BLUEPRINTS): one query per
    blueprint and process rather than one per step."""
    return Blueprint.objects.get(pk=blueprint_id)


_RELEASE = """
UPDATE loops_looprun SET lease_worker = '', lease_expires_at = NULL,
    updated_at = CASE WHEN %(touch)s THEN now() ELSE updated_at END
WHERE id = %(run)s AND lease_worker = %(me)s
"""


def release(run_id: int, *, touch: bool = False) -> None:
    """Give the lease up; touch: and mark the run as just seen, so the reaper does not send
    a step for it while it waits (for its bid window, say) with no lease."""
    with prepared_cursor() as cursor:
        cursor.execute(_RELEASE, {"run": run_id, "me": worker(), "touch": touch})
