"""Sending a run's next step: the one way services and the engine ask for `loops.tasks.advance`,
by name, so that no service imports a tasks module (STYLE.md B.2); and, alike, the sweep that
withdraws the decisions of ended runs."""

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


WITHDRAW = "oversight.tasks.interrupts_withdraw_ended"


def withdraw_waiting_decisions() -> None:
    """After commit of a run's end while a decision waited for it (a cancel): withdraw
    the decisions of ended runs now, on the urgent queue, rather than at the beat's next
    sweep, which would leave them in every inbox for seconds with buttons that can only
    answer 409 run_ended. The sweep stays the backstop if this send is lost."""
    transaction.on_commit(lambda: current_app.send_task(WITHDRAW, queue=URGENT_QUEUE), robust=True)
