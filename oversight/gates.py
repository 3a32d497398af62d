"""The one question the engine asks before each step and each agent call: may this run
proceed? Answered from the database, so every worker gets the same answer (DESIGN.md H1).

Read-only: whoever reopens a gate (resume, lift, reset) re-enqueues the run itself.
"""

from __future__ import annotations

from loops.models import LoopRun


def may_proceed(run: LoopRun) -> bool:
    """Paused, cancelled, halted, interrupted and finished runs take no step.

    Halts, open breakers and pending interrupts are checked here too once they exist
    (the oversight issue); until then a run's own state is the whole answer.
    """
    return run.state == LoopRun.State.RUNNING


def agents_excluded(run: LoopRun) -> set[int]:
    """Agents of the run's domain that must not hear a broadcast (open breakers)."""
    return set()
