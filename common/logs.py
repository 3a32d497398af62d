"""Log records carry the ids of the work they belong to (README: Metrics and logs).

In a worker, every task runs inside bind(task=..., task_id=...) (console.celery), and a loop
step adds run_id and root_id to it (loops.tasks, loops.engine): every record logged until the
task ends carries them, Celery's own "succeeded" and "raised" records included. ContextFilter,
on the handler, copies them onto each record; the JSON formatter writes them as fields.
logging_config() builds settings.LOGGING, which puts them in place.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_ids: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "console_log_ids", default=None
)

# The ids a text line shows, in this order; JSON shows every bound id.
TEXT_IDS = ("run_id", "root_id", "task", "task_id")


@contextmanager
def bind(**ids: Any) -> Iterator[None]:
    """Every record logged inside the block carries ids, and those of enclosing blocks."""
    token = _ids.set({**(_ids.get() or {}), **ids})
    try:
        yield
    finally:
        _ids.reset(token)


def add(**ids: Any) -> None:
    """Add ids to the innermost bind() block until it ends; outside any block, nothing (a
    step run in-process by a test or a command leaves no ids behind)."""
    if (bound := _ids.get()) is not None:
        _ids.set({**bound, **ids})


def bound() -> dict[str, Any]:
    return dict(_ids.get() or {})


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (an id the call passed in extra= wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_ids.get() or {}).items():
            if key not in record.__dict__:
                setattr(record, key, value)
        return True


class TextFormatter(logging.Formatter):
    """One line for a person at a terminal (LOG_FORMAT=text), the ids at its end."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = " ".join(
            f"{key}={record.__dict__[key]}" for key in TEXT_IDS if key in record.__dict__
        )
        return f"{line} [{ids}]" if ids else line


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """settings.LOGGING: the root logger writes to stderr in log_format ("json" or "text",
    which the settings check) at level, each record with the bound ids (ContextFilter)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"ids": {"()": "common.logs.ContextFilter"}},
        "formatters": {
            "json": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "fmt": "{levelname}{name}{message}",
                "style": "{",
                "rename_fields": {"levelname": "level", "name": "logger"},
                "timestamp": "time",  # ISO 8601, UTC
            },
            "text": {
                "()": "common.logs.TextFormatter",
                "format": "%(asctime)s %(levelname)s %(name)s: %(message)s",
            },
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "filters": ["ids"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
    }


class AccessLog:
    """Daphne's action logger (its hook for the access log), as records of the logger
    `daphne.access` instead of NCSA text on standard output: each line is then formatted as
    every other (JSON by default), with the request's parts as fields. console.web puts it in.
    """

    logger = logging.getLogger("daphne.access")
    # Daphne's own words for websocket events in its access log.
    WEBSOCKET = {
        "connecting": "WSCONNECTING",
        "connected": "WSCONNECT",
        "rejected": "WSREJECT",
        "disconnected": "WSDISCONNECT",
    }

    def __call__(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        if protocol == "http" and action == "complete":
            method, path, status = details["method"], details["path"], details["status"]
            size, duration = details["size"], round(details["time_taken"], 6)  # seconds
            self.logger.info(
                "%s %s %s %sB %.1fms",
                *(method, path, status, size, duration * 1000),
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "client": details["client"],
                    "size": size,
                    "duration": duration,
                },
            )
        elif protocol == "websocket" and (word := self.WEBSOCKET.get(action)):
            fields = {"method": word, "path": details["path"], "client": details["client"]}
            self.logger.info("%s %s", word, details["path"], extra=fields)
