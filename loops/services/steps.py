"""Sending a run's next step: the one way services and the engine ask for `loops.tasks.advance`,
by name, so that no service imports a tasks module (STYLE.md B.2)."""

from __future__ import annotations

from celery import current_app
from django.db import transaction

ADVANCE = "loops.tasks.advance"
URGENT_QUEUE = "urgent"


def enqueue(run_id: int, countdown: float | None = None, *, urgent: bool = False) -> None:
    """Step the run after commit. A step a person is waiting for (a decision, a resume, a
    lift) goes to the urgent queue, which workers read first, so it does not wait behind a
    thousand queued steps (DESIGN.md section 6: decision → next step)."""
    queue = URGENT_QUEUE if urgent else None
    # robust: with the broker down, the committed change (a run started, a decision, a lift)
    # must not answer as an error, or a client retrying it would make it twice; the send's
    # failure is logged and the reaper steps the run (loops.engine.reclaim).
    transaction.on_commit(
        lambda: current_app.send_task(ADVANCE, (run_id,), countdown=countdown, queue=queue),
        robust=True,
    )
