"""Database errors a service may safely meet again."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db import OperationalError


def is_deadlock(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"


def retry_deadlocks[F: Callable[..., Any]](service: F) -> F:
    """Run a durable service again (twice at most) when PostgreSQL chose its transaction as
    a deadlock victim: it rolled back whole, so running it again is safe. Needed because a
    child's return locks child then parent, while a cancel locks parent then children."""

    @functools.wraps(service)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(3):
            try:
                return service(*args, **kwargs)
            except OperationalError as exc:
                if not is_deadlock(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]
