from __future__ import annotations

from celery import shared_task


@shared_task
def demo_keep_running() -> None:
    """Beat, every 5 s: top each demo domain up to DEMO_RUNS_PER_DOMAIN working main runs."""
    from demo import services

    services.demo_keep_running()


@shared_task
def demo_prune() -> None:
    """Beat, every 10 minutes: delete finished demo stacks older than DEMO_KEEP_HOURS."""
    from demo import services

    services.demo_prune()
