from __future__ import annotations

import os

from celery import Celery
from celery.signals import task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")

app = Celery("console")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _add_worker_steps() -> None:
    from console.liveness import Liveness

    app.steps["worker"].add(Liveness)


_add_worker_steps()


@task_prerun.connect
def _drop_broken_connections(**kwargs) -> None:
    """Connections live across tasks (CELERY_DB_REUSE_MAX); one that failed (PostgreSQL
    restarted, say) is closed here, so the next query reconnects instead of failing."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if connection.errors_occurred and not connection.is_usable():
            connection.close()
