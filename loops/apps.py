from __future__ import annotations

from django.apps import AppConfig


class LoopsConfig(AppConfig):
    """Orchestration and agent coordination: domains, blueprints, loop runs as stack frames,
    iterations, bids and contributions, and the engine that advances them on Celery."""

    name = "loops"

    def ready(self) -> None:
        from importlib import import_module

        from django.conf import settings
        from django.db.models.signals import post_migrate

        from loops.declare import check_graph

        for module in settings.LOOP_DECLARATIONS:
            import_module(module)
        check_graph()  # a recursion without bound stops the start, not a run
        post_migrate.connect(_sync, sender=self)


def _sync(**kwargs) -> None:
    from loops.declare import sync_declarations

    sync_declarations()
