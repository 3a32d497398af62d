from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from common import logs

# PostgreSQL restarting, in recovery or failing over: the step's transaction rolled back
# whole, so it is sent again within seconds instead of waiting for the reaper, which only
# re-sends a run nobody touched for LOOP_STALE_SECONDS (a minute) when the claim failed too.
# A deadlock is caught inside the engine, which steps again itself.
_DATABASE_DOWN = (OperationalError, InterfaceError)


@shared_task(
    acks_late=True,
    autoretry_for=_DATABASE_DOWN,
    retry_backoff=1,
    retry_backoff_max=10,
    retry_jitter=True,
    max_retries=8,
)
def advance(run_id: int) -> None:
    """One step of a run; a duplicate or a replay is a no-op (loops.engine)."""
    from loops import engine

    logs.add(run_id=run_id)  # until the task ends, Celery's own records included (console.celery)
    engine.advance(run_id=run_id)


@shared_task
def runs_reclaim() -> None:
    """Beat backstop for DESIGN.md H4: runs whose worker died, and parents left waiting."""
    from loops import engine

    engine.reclaim()


@shared_task
def agent_stats_fold() -> None:
    from loops import learning

    while learning.stats_fold() == learning.FOLD_BATCH:  # more waiting: keep going
        pass


@shared_task
def domain_minutes_sweep() -> None:
    """Beat: roll the last minutes' iterations and calls up for the domain page's charts."""
    from loops import charts

    charts.domain_minutes_sweep()
