"""Fixtures shared by the whole suite. The services are real: bin/test starts PostgreSQL and
Redis (or uses DATABASE_URL and REDIS_URL) and this file fails fast when they are missing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from console import liveness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A test worker's process kind, which its database connections carry as application_name
# (console.settings).
WORKER_APPLICATION = "test-worker"


def pytest_configure(config: pytest.Config) -> None:
    """Fail fast, and say how to fix it, when PostgreSQL or Redis does not answer."""
    try:
        psycopg.connect(settings.DATABASE_URL, connect_timeout=3).close()
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3).ping()
    except (psycopg.OperationalError, redis.RedisError) as exc:
        pytest.exit(
            f"PostgreSQL or Redis is not reachable ({exc}). Run the tests with ./bin/test, which "
            "starts both, or set DATABASE_URL and REDIS_URL to running servers.",
            returncode=3,
        )


@pytest.fixture(scope="session", autouse=True)
def _fresh_services() -> None:
    # Liveness keys and queued messages of an earlier run must not leak into this one.
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    # The pages link static files through whitenoise's manifest, as in production.
    call_command("collectstatic", "--noinput", verbosity=0)


@dataclass
class Worker:
    process: subprocess.Popen
    hostname: str
    # The process this object already killed or stopped. Its pid, and so its process group
    # id, is free once it is reaped, and Linux hands pids out again (pid_max may be 32768:
    # every PostgreSQL backend takes one, and each leads a group of its own); a second
    # killpg would SIGKILL whoever has it now, a backend say, restarting PostgreSQL.
    _ended: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def kill(self) -> None:
        """SIGKILL the worker and its pool processes at once: no goodbye, no acks."""
        if self._ended is self.process:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._ended = self.process

    def stop(self) -> None:
        """A clean SIGTERM stop, as the run command does it; a kill if that hangs."""
        if self._ended is self.process:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        # Pool processes orphaned by an earlier crash of the main process go too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._ended = self.process


def start_worker(
    database_name: str,
    *,
    name: str = "",
    beat: bool = False,
    level: str = "WARNING",
    options: tuple[str, ...] = ("-c", "2"),
    env: dict[str, str] | None = None,
    output=None,
) -> Worker:
    """A real Celery worker process on the test database and the test Redis, once it is live;
    with beat=True it also runs the periodic tasks (the reaper), as `celery worker -B`.
    options: more of celery worker's own (concurrency, queues); env: more variables; output:
    a file for its stdout and stderr (else this process's)."""
    hostname = f"{name or 'test'}-{uuid.uuid4().hex[:8]}@localhost"
    url = urlsplit(settings.DATABASE_URL)._replace(path=f"/{database_name}").geturl()
    environment = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "CONSOLE_PROCESS": WORKER_APPLICATION,
        **(env or {}),
    }
    argv = [sys.executable, "-m", "celery", "-A", "console", "worker", "-l", level]
    argv += [*options, "-n", hostname]
    if beat:
        argv += ["-B", "-s", os.path.join(settings.DATA_DIR, f"beat-{hostname}")]
    process = subprocess.Popen(
        argv, cwd=ROOT, env=environment, stdout=output, stderr=output, start_new_session=True
    )
    worker = Worker(process, hostname)
    deadline = time.monotonic() + 60
    while not liveness.redis_client().exists(f"{liveness.KEY_PREFIX}{hostname}"):
        if process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"the Celery worker {hostname} did not come up")
        time.sleep(0.1)
    return worker


# The session's worker: celery_worker starts it when a test asks for it and none is running,
# and every flush after a transactional test stops it (_no_worker_in_the_flush).
_session_worker: list[Worker] = []


@pytest.fixture(scope="session")
def _session_worker_stopped(django_db_setup: None) -> Iterator[None]:
    yield  # until the session's end, before the test database is dropped
    if _session_worker:
        _session_worker.pop().stop()


@pytest.fixture
def celery_worker(_session_worker_stopped: None) -> Worker:
    """A real worker on the test database (after django_db_setup, so that it sees it)."""
    if _session_worker and _session_worker[0].process.poll() is None:
        return _session_worker[0]
    if _session_worker:
        _session_worker.pop().stop()  # it ended by itself: its pool processes go too
    _session_worker.append(start_worker(connection.settings_dict["NAME"]))
    return _session_worker[0]


@pytest.fixture(autouse=True)
def _no_worker_in_the_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a transactional test, stop the session's worker and wait until PostgreSQL has no
    session of any test worker left; only then may the flush empty the tables.

    Why stop it rather than wait until it looks idle: the flush is one TRUNCATE that locks
    the tables one at a time, and a worker's transaction that holds some of them and goes
    on to another makes each wait on the other: PostgreSQL aborts one, the flush if it
    loses (failing the next test), or the worker commits rows of the test after the flush.
    Waiting until no run holds a lease (the fix before this one) left such windows open: a
    step that gave its lease up still parks its run in one more transaction
    (engine.park_if_stopped), and tasks sent on commit (pushes, a child's return) hold no
    lease at all. Any wait on what a worker seems to be doing is a snapshot it can leave a
    moment later; a worker whose processes have exited, and whose backends PostgreSQL has
    ended (a SIGKILLed one's may outlive it briefly), is in no transaction and starts none.
    It costs a clean stop (about 2 s) and, for the next test that asks for celery_worker, a
    start (about 1.5 s). Tests that start their own workers stop them themselves.
    Requesting transactional_db here sets it up first, so this teardown runs before its flush.
    """
    marker = request.node.get_closest_marker("django_db")
    if not (marker and marker.kwargs.get("transaction")) and (
        "transactional_db" not in request.fixturenames
    ):
        yield
        return
    request.getfixturevalue("transactional_db")
    yield
    if _session_worker:
        _session_worker.pop().stop()
    wait_for(lambda: _worker_sessions() == 0, 30)


def _worker_sessions() -> int:
    """Test workers' sessions on the test database (their connections' application_name)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [WORKER_APPLICATION],
        )
        return cursor.fetchone()[0]


def drive(run, now=None, steps: int = 40):
    """Step every running run of the stack in this process until none is left (or steps
    run out); returns the root run, refreshed."""
    from loops import engine
    from loops.models import LoopRun

    for _ in range(steps):
        live = list(
            LoopRun.objects.filter(root_id=run.root_id, state=LoopRun.State.RUNNING).values_list(
                "pk", flat=True
            )
        )
        if not live:
            break
        for run_id in live:
            engine.advance(run_id=run_id, now=now)
    run.refresh_from_db()
    return run


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1):
    """Poll until predicate() is truthy and return it; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


def with_role(user, role: str = "viewer"):
    """Put a user in one of the console's role groups (console.roles)."""
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get(name=role))
    return user


# --- Declarations, roles and the personas (vera, otto, ada; olga has no role) --------------

PASSWORD = "a long passphrase"


def person(username: str, role: str | None = None, *, email: str = ""):
    """A user with PASSWORD, in one of the console's role groups or (role None) in none."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username, email, password=PASSWORD)
    return with_role(user, role) if role else user


@pytest.fixture
def roles(db) -> None:
    """The role groups (console.roles): a transaction=True test elsewhere may have flushed
    them with the other tables."""
    from console.roles import roles_sync

    roles_sync()


@pytest.fixture
def declared(roles) -> None:
    """The declared domains, blueprints and agents (loops.declare), and the role groups:
    a transaction=True test flushes them with the other tables. A module that needs them
    for every test lists it: pytestmark = pytest.mark.usefixtures("declared")."""
    from loops.declare import sync_declarations

    sync_declarations()


@pytest.fixture
def declared_breakers(declared) -> None:
    """declared, and the declared circuit breakers (oversight.services.breakers)."""
    from oversight.services.breakers import breakers_sync

    breakers_sync()


# Each persona is signed in on the test's client (pytest-django's `client`); signed_in(user)
# gives another client. Requesting two signs the client in as the one requested last.


@pytest.fixture
def viewer(roles, client):
    """vera, a viewer: she sees everything and changes nothing (DESIGN.md H6)."""
    return _signed_in_on(client, person("vera", "viewer"))


@pytest.fixture
def operator(roles, client):
    """otto, an operator: he decides interrupts, pauses runs, resets breakers."""
    return _signed_in_on(client, person("otto", "operator"))


@pytest.fixture
def admin(roles, client):
    """ada, an admin: she also halts everything and lifts halts."""
    return _signed_in_on(client, person("ada", "admin"))


@pytest.fixture
def outsider(roles, client):
    """olga, signed in but in no role group: the console refuses her everything."""
    return _signed_in_on(client, person("olga"))


def _signed_in_on(client, user):
    client.force_login(user)
    return user


# --- Clients: signed in, or calling the API with a token -----------------------------------


def signed_in(user):
    """A test client with the user signed in (a browser session)."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client


def bearer(token: str):
    """A test client calling the API with a token (Authorization: Bearer)."""
    from django.test import Client

    return Client(headers={"Authorization": f"Bearer {token}"})


# Every test agent that calls the API signs with this secret (declared as secret_env).
AGENT_SECRET_ENV = "TEST_AGENT_SECRET"
os.environ.setdefault(AGENT_SECRET_ENV, "test-agent-shared-secret")


# (secret, body) → the timestamp signed_bearer last signed them with, across its clients.
_last_signed: dict[tuple[str, bytes], int] = {}


def signed_bearer(token: str, secret: str):
    """A test client calling the API with an agent's token, each request signed over the
    exact bytes it sends (common.signing). A body sent before under the same secret gets a
    later second than the last time, so that it is not a replay of it (the signature covers
    the timestamp and body only), as an agent sending the same body twice must do."""
    from django.test import Client
    from django.utils.encoding import force_bytes

    from common.signing import signed_headers

    class SignedClient(Client):
        def generic(self, method, path, data="", *args, headers=None, **kwargs):
            body = force_bytes(data)
            now = max(int(time.time()), _last_signed.get((secret, body), 0) + 1)
            _last_signed[(secret, body)] = now
            signed = signed_headers(secret, body, now=now)
            return super().generic(
                method, path, data, *args, headers={**(headers or {}), **signed}, **kwargs
            )

    return SignedClient(headers={"Authorization": f"Bearer {token}"})


def agent_bearer(agent):
    """signed_bearer with a new token of the agent and its own secret (its config)."""
    from common.signing import shared_secret
    from console.auth import token_create

    return signed_bearer(token_create(agent=agent), shared_secret(agent.config))


def post_json(client, path: str, body=None):
    """POST body as JSON (no body at all when None)."""
    import json

    data = "" if body is None else json.dumps(body)
    return client.post(path, data, content_type="application/json")


# --- Redis crashed and recovered (tests/faults, tests/browser/test_redis_resync) -----------


def own_redis() -> redis.Redis:
    """A client of bin/test's own Redis, which a test may crash; skipped against any other
    (a REDIS_URL elsewhere is somebody's server). CI runs bin/test's own: it never skips."""
    if urlsplit(settings.REDIS_URL).hostname not in ("127.0.0.1", "localhost"):
        pytest.skip("crashes only a Redis on this machine (bin/test's own)")
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1)


def redis_server_id(client: redis.Redis) -> str | None:
    """The server's run id (new after a restart), or None while it is down."""
    try:
        return client.info("server")["run_id"]
    except redis.RedisError:
        return None


def redis_crash(client: redis.Redis) -> str | None:
    """DEBUG CRASH-AND-RECOVER: every socket closed without a save, down 2 s, then the same
    supervised process re-execs on its port and reloads its append-only file. Returns the
    run id from before, for redis_server_id(client) not in (None, before) once it is back."""
    before = redis_server_id(client)
    with contextlib.suppress(redis.ConnectionError):  # it drops our connection too
        client.execute_command("DEBUG", "CRASH-AND-RECOVER", 2000)
    return before
