"""The run command itself: a real embedded PostgreSQL and Redis, Daphne, a Celery worker and
beat, started on free ports in a temporary data folder, then stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import psutil

from console.supervisor import free_port
from tests.conftest import ROOT, wait_for

LAUNCH_VARIABLES = ("DATABASE_URL", "REDIS_URL", "DJANGO_SECRET_KEY", "DJANGO_SETTINGS_MODULE")


def _launch(
    data_dir, port: int, pg_port: int, redis_port: int, **extra: str
) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items() if key not in LAUNCH_VARIABLES}
    env.update(extra)
    env.update(
        CONSOLE_DATA_DIR=str(data_dir),
        PORT=str(port),
        EMBEDDED_PG_PORT=str(pg_port),
        EMBEDDED_REDIS_PORT=str(redis_port),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "console.launcher", "run"],
        cwd=ROOT,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _read_until(process: subprocess.Popen[str], marker: str) -> str:
    """Output up to the line with marker (the launcher prints it once the console is healthy)."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"the launcher ended before {marker!r}:\n{''.join(seen)}")


def _health(port: int, timeout: float = 5) -> dict[str, object]:
    url = f"http://127.0.0.1:{port}/api/v1/health"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _health_retried(port: int) -> object:
    try:
        return _health(port, timeout=30)["database"]
    except ConnectionResetError:
        return _health(port, timeout=30)["database"]


def _role(process: psutil.Process) -> str:
    try:
        command = process.cmdline()
    except psutil.NoSuchProcess:  # ended meanwhile (a zombie too: ZombieProcess)
        return "ended"
    if "console.web" in command:  # Daphne, as the launcher runs it (console.web)
        return "daphne"
    for role in ("worker", "beat"):
        if role in command:
            return role
    return process.name()


def _stop(process: subprocess.Popen[str]) -> tuple[int, dict[psutil.Process, str]]:
    """SIGTERM the launcher; return its exit code and the processes it had, with their roles."""
    family = {}
    for child in psutil.Process(process.pid).children(recursive=True):
        try:
            family[child] = _role(child)
        except psutil.NoSuchProcess:
            pass  # a short-lived one, such as a PostgreSQL backend that just ended
    process.send_signal(signal.SIGTERM)
    drain = getattr(process, "drain", None)
    if drain is None:
        process.stdout.read()  # drain, so the launcher never blocks on a full pipe
    else:
        drain.join(120)
    return process.wait(120), family


def _keep_draining(process: subprocess.Popen[str]) -> None:
    """Read the launcher's output from now on, in a thread: its children write to the same
    pipe (the demo's worker steadily), and a full pipe would block whichever of them logs
    next, a Daphne included, which then serves nothing."""
    drain = threading.Thread(target=process.stdout.read, daemon=True)
    drain.start()
    process.drain = drain  # type: ignore[attr-defined]


def test_it_runs_the_console_stops_cleanly_and_keeps_the_data(tmp_path):
    ports = free_port(), free_port(), free_port()

    first = _launch(tmp_path, *ports)
    output = _read_until(first, "The console is running at")
    health = _health(ports[0])
    code, family = _stop(first)

    assert "password:" in output  # the first admin's password, shown once
    assert health == {"database": "ok", "redis": "ok", "workers": 1, "halted": False, "halts": 0}
    assert code == 0
    assert {"postgres", "redis-server", "daphne", "worker", "beat"} <= set(family.values())
    wait_for(
        lambda: not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    )

    second = _launch(tmp_path, *ports)
    output = _read_until(second, "The console is running at")
    code, _ = _stop(second)

    assert "An admin account exists" in output  # the same database, not a new one
    assert "password:" not in output
    assert code == 0


def test_it_uses_the_servers_in_the_environment_and_starts_none(tmp_path, settings):
    port = free_port()

    launcher = _launch(
        tmp_path,
        port,
        free_port(),
        free_port(),
        DATABASE_URL=settings.DATABASE_URL,
        REDIS_URL=settings.REDIS_URL,
    )
    output = _read_until(launcher, "The console is running at")
    health = _health(port)
    code, family = _stop(launcher)

    assert "PostgreSQL: using DATABASE_URL" in output
    assert "Redis: using REDIS_URL" in output
    assert health["database"] == health["redis"] == "ok"
    assert not {"postgres", "redis-server"} & set(family.values())
    assert code == 0


def test_it_names_the_variable_to_change_when_the_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = _launch(tmp_path, port, free_port(), free_port())
        output = process.communicate(timeout=60)[0]

    assert process.returncode == 1
    assert f"Port {port}" in output
    assert f"PORT={port + 1}" in output


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _sign_in(port: int, password: str) -> str:
    """The admin's session cookie, signed in through the login form as a person would."""
    import http.cookiejar
    import re
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    login = f"http://127.0.0.1:{port}/accounts/login/"
    with opener.open(login, timeout=10) as response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode())
    assert token
    form = {"csrfmiddlewaretoken": token.group(1), "username": "admin", "password": password}
    body = urllib.parse.urlencode(form).encode()
    with opener.open(login, data=body, timeout=10):
        pass
    session = {cookie.name: cookie.value for cookie in jar}["sessionid"]
    return f"sessionid={session}"


def test_web_processes_serve_one_port_and_each_delivers_pushes(tmp_path):
    """WEB_PROCESSES=2: two Daphne processes on the one port; the kernel gives both some of
    the sockets (SO_REUSEPORT), and a push sent through Redis reaches every socket, whichever
    process holds it. One killed, the other serves the port at once, and another replaces
    it."""
    import asyncio
    import re

    from channels_redis.pubsub import RedisPubSubChannelLayer
    from websockets.asyncio.client import connect

    port, pg_port, redis_port = free_port(), free_port(), free_port()
    launcher = _launch(
        tmp_path, port, pg_port, redis_port, WEB_PROCESSES="2", CHANNELS_PREFIX="web-test"
    )
    try:
        output = _read_until(launcher, "The console is running at")
        _keep_draining(launcher)
        password = re.search(r"password: (\S+)", output)
        assert password, output
        cookie = _sign_in(port, password.group(1))
        daphnes = [p for p in psutil.Process(launcher.pid).children() if _role(p) == "daphne"]
        fragment = '<div id="probe-web" hx-swap-oob="true">pushed</div>'

        async def sockets_and_a_push() -> tuple[list[int], list[str]]:
            sockets = [
                await connect(
                    f"ws://127.0.0.1:{port}/ws/console/",
                    origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
                    additional_headers={"Cookie": cookie},
                )
                for _ in range(16)
            ]
            held = [
                sum(
                    c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                    for c in daphne.net_connections("tcp")
                )
                for daphne in daphnes
            ]
            layer = RedisPubSubChannelLayer(
                hosts=[f"redis://127.0.0.1:{redis_port}/0"], prefix="web-test"
            )
            await layer.group_send("console", {"type": "html.push", "html": fragment})
            received = []
            for ws in sockets:
                async with asyncio.timeout(10):
                    while "probe-web" not in (message := str(await ws.recv())):
                        pass
                received.append(message)
                await ws.close()
            await layer.flush()
            return held, received

        held, received = asyncio.run(sockets_and_a_push())

        # The supervisor replaces a web process that lived 10 s (RESPAWN_AFTER_SECONDS).
        time.sleep(max(0.0, 11 - (time.time() - daphnes[0].create_time())))
        daphnes[0].kill()
        wait_for(lambda: not _alive(daphnes[0]))  # its socket closed with it
        # New connections, all served (a busy machine may be slow, not silent). A connection
        # the kernel had already queued on the killed process's socket is reset with it, as a
        # client sees when any server dies: it asks again, once.
        time.sleep(0.5)
        served = [_health_retried(port) for _ in range(10)]
        family = psutil.Process(launcher.pid)
        wait_for(  # and another in its place
            lambda: sum(_role(p) == "daphne" for p in family.children() if _alive(p)) == 2,
            timeout=60,
        )
    finally:
        code, _ = _stop(launcher)

    assert len(daphnes) == 2
    assert sum(held) == 16 and all(held)  # both processes accepted some (2 x 2^-16 if not)
    assert received == [fragment] * 16
    assert served == ["ok"] * 10
    assert code == 0
