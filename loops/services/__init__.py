"""Writes on loop runs that people, the API and the engine ask for, by subject:

    runs      starting runs; pause, resume, cancel
    stack     a child's return to its parent, a waiting parent's wake, the live stack's push
    cost      reservations from a run's budget, and its extension (CONCEPTS 69)
    domains   pausing and resuming a whole domain; agents' heartbeats
    steps     sending a run's next step, by the task's name

The names below are the package's public face (`from loops import services`)."""

from __future__ import annotations

from loops.services.cost import (
    cost_extend,
    cost_parent_room,
    cost_reserve,
    cost_reserve_locked,
    cost_settle,
)
from loops.services.domains import (
    DOMAIN_PAUSABLE,
    agent_heartbeat,
    domain_pause,
    domain_paused_by,
    domain_resume,
    runs_pause_marked,
    runs_resume_marked,
)
from loops.services.runs import (
    create_run,
    resume_target,
    run_cancel,
    run_pause,
    run_resume,
    run_start,
    run_start_in,
)
from loops.services.stack import child_returned, children_pending, run_wake, stack_changed
from loops.services.steps import URGENT_QUEUE, enqueue

__all__ = [
    "DOMAIN_PAUSABLE",
    "URGENT_QUEUE",
    "agent_heartbeat",
    "child_returned",
    "children_pending",
    "cost_extend",
    "cost_parent_room",
    "cost_reserve",
    "cost_reserve_locked",
    "cost_settle",
    "create_run",
    "domain_pause",
    "domain_paused_by",
    "domain_resume",
    "enqueue",
    "resume_target",
    "run_cancel",
    "run_pause",
    "run_resume",
    "run_start",
    "run_start_in",
    "run_wake",
    "runs_pause_marked",
    "runs_resume_marked",
    "stack_changed",
]
