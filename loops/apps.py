from __future__ import annotations

from django.apps import AppConfig


class LoopsConfig(AppConfig):
    """Orchestration and agent coordination: domains, blueprints, loop runs as stack frames,
    iterations, bids and contributions, and the engine that advances them on Celery."""

    name = "loops"
