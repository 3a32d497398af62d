"""Celery interfaces of the engine and the loops services: a few lines each (STYLE.md B.6)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from common import logs
from common.backoff import backoff
from loops import engine, learning, rollup

# PostgreSQL restarting, in recovery or failing over: the step's transaction rolled back
# whole, so it is sent again within seconds instead of waiting for the reaper, which only
# re-sends a run nobody touched for LOOP_STALE_SECONDS (a minute) when the claim failed too.
# A deadlock is caught inside the engine, which steps again itself.
_DATABASE_DOWN = (OperationalError, InterfaceError)


@shared_task(bind=True, acks_late=True, max_retries=8)
def advance(self, run_id: int) -> None:
    """The run's next step (and those that follow at once, for a slice); a duplicate or a
    replay is a no-op (loops.engine)."""
    logs.add(run_id=run_id)  # until the task ends, Celery's own records included (console.celery)
    try:
        engine.advance(run_id=run_id, slice_s=settings.LOOP_STEP_SLICE_SECONDS)
    except _DATABASE_DOWN as exc:
        wait = backoff(self.request.retries + 1, base=1.0, cap=10.0)
        raise self.retry(exc=exc, countdown=wait) from exc


@shared_task
def runs_reclaim() -> None:
    """Beat backstop for DESIGN.md H4: runs whose worker died, and parents left waiting."""
    engine.reclaim()


@shared_task
def agent_stats_fold() -> None:
    while learning.stats_fold() == learning.FOLD_BATCH:  # more waiting: keep going
        pass


@shared_task
def domain_minutes_sweep() -> None:
    """Beat: roll the last minutes' iterations and calls up for the domain page's charts."""
    rollup.domain_minutes_sweep()
