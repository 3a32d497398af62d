"""The project package: settings, URLs, ASGI, the Celery app, the console's views and
websocket consumers, and the launcher that runs it all (no domain rules live here)."""

from __future__ import annotations

from console.celery import app as celery_app

__all__ = ("celery_app",)
