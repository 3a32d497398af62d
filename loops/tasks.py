from __future__ import annotations

from celery import shared_task

from console import logs


@shared_task(acks_late=True)
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
