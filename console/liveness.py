"""Which Celery workers are alive, answered from Redis.

Each worker refreshes a key with a time-to-live every few seconds from a bootstep on its own
timer, and pushes the new count to every console. A worker that dies without saying goodbye
drops out when its key expires, without anyone having to notice. Liveness is ephemeral, so
Redis holding it alone breaks no rule: nothing is lost when it is.
"""

from __future__ import annotations

import logging
import time

import redis
from celery import bootsteps

from common.push import CONSOLE_GROUP, push_html
from common.redis import redis_client

logger = logging.getLogger(__name__)

KEY_PREFIX = "console:worker:"
BEAT_SECONDS = 5
TTL_SECONDS = 3 * BEAT_SECONDS  # two missed beats are tolerated


def worker_count() -> int:
    return sum(1 for _ in redis_client().scan_iter(match=f"{KEY_PREFIX}*", count=1000))


def worker_count_or_none() -> int | None:
    """The live worker count, or None when Redis does not answer (shown as unknown)."""
    try:
        return worker_count()
    except redis.RedisError:
        return None


class Liveness(bootsteps.StartStopStep):
    """Worker bootstep: announce this worker while it runs, withdraw it on a clean stop."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, parent, **kwargs) -> None:
        super().__init__(parent, **kwargs)
        self.timer_ref = None
        self.key = ""

    def start(self, parent) -> None:
        self.key = f"{KEY_PREFIX}{parent.hostname}"
        self.beat()
        self.timer_ref = parent.timer.call_repeatedly(BEAT_SECONDS, self.beat, priority=10)

    def stop(self, parent) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()
        try:
            redis_client().delete(self.key)
            _push_worker_count()
        except redis.RedisError:
            logger.warning(
                "could not withdraw %s from Redis; it expires in %ss", self.key, TTL_SECONDS
            )

    def beat(self) -> None:
        try:
            redis_client().set(self.key, time.time(), ex=TTL_SECONDS)
            _push_worker_count()
        except redis.RedisError as exc:
            logger.warning("liveness beat failed: %s", exc)


def _push_worker_count() -> None:
    # Imported here: the Celery app adds this bootstep while Django is still loading, and
    # the fragments read models.
    from console import fragments

    push_html(CONSOLE_GROUP, fragments.workers(worker_count_or_none()))
