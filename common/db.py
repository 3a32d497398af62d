"""Database errors a service may safely meet again, and the cursor of the hot path."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db import OperationalError, connection
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.backends.utils import CursorWrapper


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


def prepared_cursor() -> CursorWrapper:
    """A cursor whose statements are prepared once per connection and then only executed:
    the parameters are bound by the server, so the same text repeats, and psycopg prepares
    it from its prepare_threshold-th run on (console.settings). The engine's statements are
    few but large (CTEs with subqueries): planned afresh each time, planning cost as much as
    running them. Django's own cursors bind on the client and are never prepared. Wrapped
    like connection.cursor()'s, so errors, execute wrappers and the debug log work alike."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = ServerBindingCursor(connection.connection)  # type: ignore[call-arg]
        return connection._prepare_cursor(cursor)  # type: ignore[attr-defined]
