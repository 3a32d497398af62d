from __future__ import annotations

from celery import shared_task
from django.core.management import call_command


@shared_task
def sessions_clear() -> None:
    """Delete expired login sessions (Django's clearsessions); scheduled daily by beat."""
    call_command("clearsessions")
