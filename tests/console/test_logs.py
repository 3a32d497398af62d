"""Structured logs (common.logs, LOGGING in console.settings): JSON lines by default, and
every record of a loop step carries its run_id and root_id, on a real worker too; Daphne's
access log is such a line too."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.db import connection

from common import logs
from console.launcher import daphne_argv
from console.supervisor import free_port
from loops import services
from loops.declare import sync_declarations
from loops.models import Iteration
from loops.services import runs
from loops.tasks import advance
from tests.conftest import ROOT, Worker, start_worker, wait_for


def _handler(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    """A logger writing through the settings' filter and the given formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.ContextFilter())
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"tests.logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(handler)
    return logger, stream


def _json_formatter() -> logging.Formatter:
    config = dict(settings.LOGGING["formatters"]["json"])
    factory = config.pop("()")
    module, _, name = factory.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)(**config)


def test_the_default_format_is_one_json_object_a_line_with_the_bound_ids():
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "json"
    logger, stream = _handler(_json_formatter())

    with logs.bind(run_id=7):
        logs.add(root_id=3)
        logger.warning("step %s", "done")
    logger.warning("afterwards")

    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    assert inside["message"] == "step done" and inside["level"] == "WARNING"
    assert (inside["run_id"], inside["root_id"]) == (7, 3)
    assert "time" in inside and inside["logger"].startswith("tests.logs.")
    assert "run_id" not in outside and "root_id" not in outside


def test_ids_added_outside_any_block_are_not_kept():
    logs.add(root_id=3)  # a step driven in-process, with no task around it

    assert logs.bound() == {}


def test_the_text_format_puts_the_ids_at_the_end_of_the_line():
    logger, stream = _handler(logs.TextFormatter("%(levelname)s %(name)s: %(message)s"))

    with logs.bind(run_id=7, root_id=3):
        logger.warning("step")
    logger.warning("plain")

    first, second = stream.getvalue().splitlines()
    assert first.endswith(": step [run_id=7 root_id=3]")
    assert second.endswith(": plain")


def _start_django(**env: str) -> subprocess.CompletedProcess[str]:
    code = "import django, logging; django.setup(); logging.getLogger('probe').warning('hello')"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_log_format_text_writes_lines_for_a_person():
    result = _start_django(LOG_FORMAT="text")

    assert result.returncode == 0, result.stderr
    assert "WARNING probe: hello" in result.stderr
    assert '"message"' not in result.stderr


def test_a_bad_log_format_stops_the_start_naming_the_variable():
    result = _start_django(LOG_FORMAT="xml")

    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert last_line.startswith("common.env.EnvError: ") and "LOG_FORMAT" in last_line


# --- On a real worker ------------------------------------------------------------------------


def _start_worker(queue: str, stderr) -> Worker:
    """A real worker at INFO, reading only its own queue, its stderr in a file."""
    return start_worker(
        connection.settings_dict["NAME"],
        name="logs",
        level="INFO",
        options=("-c", "1", "-Q", queue),
        env={"LOG_FORMAT": "json"},
        output=stderr,
    )


def _records(path) -> list[dict]:
    """The worker's output lines that are JSON objects (Celery's banner is not)."""
    records = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
    return records


@pytest.mark.django_db(transaction=True)  # the worker process must see committed rows
def test_a_step_on_a_worker_logs_json_with_its_run_and_root_ids(tmp_path, monkeypatch):
    sync_declarations()
    output = tmp_path / "worker.log"
    queue = f"logs-{uuid.uuid4().hex[:8]}"
    # The run's first step goes to this test's worker alone, not to another test's worker.
    monkeypatch.setattr(runs, "enqueue", lambda *args, **kwargs: None)
    run = services.run_start(domain="arena", blueprint="arena-all", input={})
    with output.open("w") as stderr:
        worker = _start_worker(queue, stderr)
        try:
            advance.apply_async((run.pk,), queue=queue)
            wait_for(lambda: Iteration.objects.filter(run=run).exists(), 60)

            def step_logged() -> list[dict]:
                return [r for r in _records(output) if r.get("run_id") == run.pk]

            stepped = wait_for(step_logged, 30)
        finally:
            worker.stop()

    record = stepped[0]
    assert record["root_id"] == run.root_id
    assert record["task"] == "loops.tasks.advance" and record["task_id"]
    assert record["logger"].startswith("celery") and "succeeded" in record["message"]
    assert {"time", "level"} <= set(record)


# --- Daphne's access log ---------------------------------------------------------------------


def _status(url: str) -> int | None:
    """The answer's status, or None while nothing listens yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 — Daphne's
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


@pytest.mark.django_db  # the health check Daphne answers reads the test database
def test_daphne_logs_each_request_as_a_json_line_with_its_path_and_status(tmp_path):
    port = free_port()
    database = urlsplit(settings.DATABASE_URL)._replace(path=f"/{connection.settings_dict['NAME']}")
    env = {
        **os.environ,
        "DATABASE_URL": database.geturl(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CONSOLE_PROCESS": "web",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    output = tmp_path / "daphne.log"
    with output.open("w") as log:
        daphne = subprocess.Popen(
            daphne_argv("127.0.0.1", port), cwd=ROOT, env=env, stdout=log, stderr=log
        )
        try:
            status = wait_for(lambda: _status(f"http://127.0.0.1:{port}/api/v1/health"), 60)

            def access() -> list[dict]:
                return [r for r in _records(output) if r["logger"] == "daphne.access"]

            logged = wait_for(access, 30)
        finally:
            daphne.terminate()
            daphne.wait(30)

    record = logged[0]
    assert record["path"] == "/api/v1/health" and record["status"] == status
    assert record["method"] == "GET" and record["level"] == "INFO"
    assert {"time", "message", "client", "size", "duration"} <= set(record)
