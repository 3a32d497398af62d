"""Extra realms (other consoles, for federation) as real processes: each its own database on
the tests' PostgreSQL, its own Redis database on the tests' Redis, its own Ed25519 key, a
Daphne web process on a port of its own and a Celery worker with beat. Nothing is faked, so
a test sees what two consoles on a network see, including one of them going away.

Redis databases: the test process (and its own workers) use 0; realms take 1 and upwards,
one each, so their queues, liveness keys and channel groups never meet.
The harness needs no test database: a test wants one only for the test process's own realm.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json as jsonlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx  # a2a-sdk's, a dependency of the console: the realms app calls peers with it
import psycopg
import pytest
import redis
from django.conf import settings
from psycopg import sql as pgsql

from console import liveness
from console.supervisor import free_port
from tests.conftest import ROOT, Worker

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def _die_with_parent() -> None:
    """PR_SET_PDEATHSIG: a realm's process ends with the test process even when pytest is
    SIGKILLed, rather than keeping its port and database connections (console.supervisor)."""
    _libc.prctl(1, int(signal.SIGTERM))


def _stop(process: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM the process's group, wait, SIGKILL on timeout. Never signals a reaped process:
    its pid, and so its group id, may belong to someone else by now (tests.conftest.Worker)."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class RealmProcess:
    slug: str
    url: str
    port: int
    database: str
    database_url: str
    redis_url: str
    key_file: Path
    folder: Path
    env: dict[str, str]
    web: subprocess.Popen | None = field(default=None, repr=False)
    worker: Worker | None = field(default=None, repr=False)

    def start_web(self, timeout: float = 60) -> None:
        """Daphne on the realm's port, once /api/v1/health answers 200 (database and Redis
        reachable: it does not wait on workers), so a test may call it at once."""
        argv = [sys.executable, "-m", "console.web", "-v", "0", "-b", "127.0.0.1"]
        self.web = self._spawn([*argv, "-p", str(self.port), "console.asgi:application"], "web")
        deadline, last = time.monotonic() + timeout, "no answer"
        while time.monotonic() < deadline and self.web.poll() is None:
            with contextlib.suppress(OSError):
                status, body = self.api("GET", "/api/v1/health")
                if status == 200:
                    return
                last = f"{status} {body}"
            time.sleep(0.1)
        self.stop_web()
        raise RuntimeError(f"realm {self.slug}'s web is not up ({last}):\n{self._tail('web')}")

    def stop_web(self) -> None:
        """The realm goes away (as a host does): its port refuses connections until
        start_web(); its worker and its data stay."""
        _stop(self.web)

    def start_worker(self, timeout: float = 60) -> None:
        """tests.conftest.start_worker's argv, waiting on the liveness key in the realm's
        own Redis database (start_worker waits on the test process's, which never gets it)."""
        hostname = f"realm-{self.slug}-{uuid.uuid4().hex[:8]}@localhost"
        argv = [sys.executable, "-m", "celery", "-A", "console", "worker", "-l", "WARNING"]
        argv += ["-c", "2", "-n", hostname, "-B", "-s", str(self.folder / "celerybeat-schedule")]
        process = self._spawn(argv, "worker")
        self.worker = Worker(process, hostname)
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2)
        deadline = time.monotonic() + timeout
        while not client.exists(f"{liveness.KEY_PREFIX}{hostname}"):
            if process.poll() is not None or time.monotonic() > deadline:
                self.worker.stop()
                raise RuntimeError(f"realm {self.slug}'s worker is not up:\n{self._tail('worker')}")
            time.sleep(0.1)

    def _spawn(self, argv: list[str], log: str) -> subprocess.Popen:
        """A child leading its own process group (signalled whole), logging to <log>.log."""
        with open(self.folder / f"{log}.log", "ab") as output:
            return subprocess.Popen(
                argv, cwd=ROOT, env=self.env, stdout=output, stderr=output,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip

    def _tail(self, log: str, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            text = (self.folder / f"{log}.log").read_text(errors="replace")
            return "its log ends:\n" + "\n".join(text.splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """Worker first (it may still be delivering through the web process), then web."""
        try:
            if self.worker is not None:
                self.worker.stop()
        finally:
            self.stop_web()

    def manage(self, *args: str) -> str:
        """`python manage.py ARGS` as the realm runs it; its stdout. A failure carries the
        command's stderr in its traceback."""
        try:
            return subprocess.run(
                [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                check=True, capture_output=True, text=True, timeout=120,
            ).stdout  # fmt: skip
        except subprocess.CalledProcessError as exc:
            exc.add_note(f"stdout:\n{exc.stdout}\nstderr:\n{exc.stderr}")
            raise

    def sql(self, query: str, params: tuple | list = ()) -> list[tuple]:
        """A query on the realm's database (autocommit); its rows, or [] for none."""
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []

    def api(self, method: str, path: str, token: str | None = None, json=None):
        """An HTTP request to the realm: (status, the JSON body parsed, else its text); an
        OSError (ConnectionError) when nothing answers."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            answer = httpx.request(  # trust_env off: no HTTP(S)_PROXY between us and 127.0.0.1
                method, self.url + path, headers=headers, json=json, timeout=10, trust_env=False
            )
        except httpx.TransportError as exc:  # refused, reset, timed out
            raise ConnectionError(f"{method} {self.url}{path}: {exc}") from exc
        status, text = answer.status_code, answer.text
        try:
            return status, jsonlib.loads(text)
        except ValueError:
            return status, text


def _database(statement: str, name: str) -> None:
    """CREATE or DROP DATABASE: outside a transaction, on the server's own database."""
    with psycopg.connect(settings.DATABASE_URL, autocommit=True) as conn:
        conn.execute(pgsql.SQL(statement).format(pgsql.Identifier(name)))  # type: ignore[arg-type]


def drop_database(name: str) -> None:
    """WITH (FORCE): a realm process that outlived its stop must not keep its database."""
    _database("DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


def start_realm(
    slug: str, redis_db: int, *, name: str | None = None, more_env: dict[str, str] | None = None
) -> RealmProcess:
    """A fresh realm: its database dropped, created and migrated, its Redis database emptied,
    its key file removed (a new key at each start), then its web process and its worker."""
    assert redis_db > 0, "Redis database 0 is the test process's"
    data_dir = Path(settings.DATA_DIR)
    folder = data_dir / "realms" / slug
    database = f"test_realm_{slug.replace('-', '_')}"
    drop_database(database)
    _database("CREATE DATABASE {}", database)
    database_url = urlsplit(settings.DATABASE_URL)._replace(path=f"/{database}").geturl()
    redis_url = urlsplit(settings.REDIS_URL)._replace(path=f"/{redis_db}").geturl()
    redis.Redis.from_url(redis_url).flushdb()
    # Each realm's own Prometheus folder: its processes' files must not mix with the tests'.
    shutil.rmtree(folder / "metrics", ignore_errors=True)
    (folder / "metrics").mkdir(parents=True)
    for stale in ("ed25519.pem", "celerybeat-schedule", "web.log", "worker.log"):
        (folder / stale).unlink(missing_ok=True)
    port = free_port()  # below the ephemeral range: no outgoing socket takes it in a restart
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE",)}
    env.pop("CELERY_BROKER_URL", None)  # the broker is the realm's Redis database
    env |= {
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DJANGO_SECRET_KEY": "tests-only-not-a-secret",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        # Static files are shared: the test session's collectstatic wrote them here.
        "CONSOLE_DATA_DIR": str(data_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        "CHANNELS_PREFIX": f"realm-{slug}",
        "CONSOLE_PROCESS": f"test-realm-{slug}",
        "REALM_SLUG": slug,
        "REALM_NAME": name or slug.title(),
        "REALM_URL": f"http://127.0.0.1:{port}",
        "REALM_KEY_FILE": str(folder / "ed25519.pem"),
        "PYTHONUNBUFFERED": "1",
        **(more_env or {}),
    }
    realm = RealmProcess(
        slug, env["REALM_URL"], port, database, database_url, redis_url,
        folder / "ed25519.pem", folder, env,
    )  # fmt: skip
    try:
        realm.manage("migrate", "--noinput", "-v", "0")
        realm.start_web()
        realm.start_worker()
    except BaseException:
        realm.stop()
        drop_database(database)
        raise
    return realm


@pytest.fixture
def realms() -> Iterator[Callable[..., RealmProcess]]:
    """start(slug, redis_db, name=None) → a running RealmProcess; at the test's end every
    realm it started is stopped (newest first) and its database dropped, each even when
    another's teardown failed. Needs no test database."""
    started: list[RealmProcess] = []

    def start(slug: str, redis_db: int, *, name: str | None = None) -> RealmProcess:
        if any(r.slug == slug or r.redis_url.endswith(f"/{redis_db}") for r in started):
            raise ValueError(f"realm {slug} or Redis database {redis_db} is taken already")
        started.append(realm := start_realm(slug, redis_db, name=name))
        cleanup.callback(drop_database, realm.database)
        cleanup.callback(realm.stop)  # last in, first out: stopped before its database goes
        return realm

    with contextlib.ExitStack() as cleanup:
        yield start
