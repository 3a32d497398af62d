from __future__ import annotations

import os
from contextlib import ExitStack

from celery import Celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_process_shutdown,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _add_worker_steps() -> None:
    from console.liveness import Liveness

    app.steps["worker"].add(Liveness)


_add_worker_steps()


@worker_process_init.connect
def _warm(**kwargs) -> None:
    """Each pool process compiles the pushed fragments before its first task (console.warm)."""
    from console.warm import warm

    warm()


@task_prerun.connect
def _drop_broken_connections(**kwargs) -> None:
    """Connections live across tasks (CELERY_DB_REUSE_MAX); one that failed (PostgreSQL
    restarted, say) is closed here, so the next query reconnects instead of failing."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.errors_occurred and not connection.is_usable():
            connection.close()


@setup_logging.connect
def _logging(loglevel=None, **kwargs) -> None:
    """Workers log as the web process does (settings.LOGGING: JSON with the bound ids), at
    the level of their -l option, instead of Celery's own format."""
    import logging.config

    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


# task id → its log binding, closed when the task ends (one task at a time per pool process).
_log_bindings: dict[str, ExitStack] = {}


@task_prerun.connect
def _log_bind(task_id: str, task, **kwargs) -> None:
    """Every record logged while a task runs carries its name and id (common.logs); a loop
    step adds its run_id and root_id, up to and including Celery's "succeeded" or "raised"."""
    from common import logs

    bindings = ExitStack()
    bindings.enter_context(logs.bind(task=task.name, task_id=task_id))
    _log_bindings[task_id] = bindings


@task_postrun.connect
def _log_unbind(task_id: str, **kwargs) -> None:
    if (bindings := _log_bindings.pop(task_id, None)) is not None:
        bindings.close()


@worker_process_shutdown.connect
def _metrics_process_dead(pid: int | None = None, **kwargs) -> None:
    """A pool process leaves: its live gauges go with it (console.metrics)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid or os.getpid())
