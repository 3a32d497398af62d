"""Runs the console, or its tests, with every service they need (bin/console, bin/test).

    python -m console.launcher run            PostgreSQL, Redis, migrate, first admin, Daphne,
                                              a Celery worker and beat, until Ctrl-C/SIGTERM
    python -m console.launcher run --federated
                                              the same, and beside it a second realm, the
                                              regional pharmacy, on PORT+1, already paired
    python -m console.launcher test [ARGS]    ruff, then pytest against its own PostgreSQL and
                                              Redis; ARGS go to a single pytest run instead

With DATABASE_URL or REDIS_URL set, that server is used and none is started.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

try:
    from common.env import (
        BASE_DIR,
        DATA_DIR,
        EMBEDDED_PG_PORT,
        EMBEDDED_REDIS_PORT,
        SECRET_KEY_FILE,
        EnvError,
        env_bool,
        env_int,
        env_str,
    )
except ValueError as exc:  # a malformed variable: say which, without a traceback
    sys.exit(f"error: {exc}")

from console import embedded
from console.federated import PHARMACY_NAME, PHARMACY_SLUG, create_database, federate, pharmacy_env
from console.supervisor import ChildFailed, PortTaken, Supervisor, free_port
from console.supervisor import start as start_child

PYTHON = sys.executable
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def main(argv: list[str]) -> int:
    command, *rest = argv or ["run"]
    # Ctrl-C and SIGTERM stop alike; set explicitly, since a shell may start us with SIGINT ignored.
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sup = Supervisor()
    try:
        if command == "run" and set(rest) <= {"--federated"}:
            return run(sup, federated=bool(rest))
        if command == "test":
            return test(sup, rest)
        print(__doc__)
        return 2
    except KeyboardInterrupt:
        print("\n==> Stopping", flush=True)
        return 0 if command == "run" else 130
    except (EnvError, PortTaken, embedded.StartError, ChildFailed) as exc:
        print(f"\nerror: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        # No second Ctrl-C may cut the ordered stop short; children die with us anyway.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if sup.children:
            sup.stop_all()
            print("==> Stopped; the data is kept for the next run.", flush=True)


def run(sup: Supervisor, *, federated: bool = False) -> int:
    """The console; federated, also the regional pharmacy's realm beside it (its own
    database, Redis database, data folder, Daphne on PORT+1, worker and beat), paired."""
    host = env_str("HOST", "127.0.0.1")
    port = env_int("PORT", 8000, minimum=1, maximum=65535)
    # As console.settings decides it: on by default with the embedded PostgreSQL only.
    demo = env_bool("DEMO_ENABLED", not os.environ.get("DATABASE_URL"))
    sup.require_free_port(port, "PORT", "the console", host=host)
    if federated:
        what = f"the {PHARMACY_NAME} realm (PORT+1)"
        sup.require_free_port(port + 1, "PORT", what, host=host)
    env = _child_env(DATA_DIR)
    _stage("Starting services")
    env.update(_start_services(sup, DATA_DIR, EMBEDDED_PG_PORT, EMBEDDED_REDIS_PORT))
    if not os.environ.get("DJANGO_SECRET_KEY"):
        _ensure_secret_key(SECRET_KEY_FILE)
    if federated:
        env["DEMO_PHARMACY_REALM"] = PHARMACY_SLUG
    _prepare(sup, env, "")
    peer = pharmacy_env(env, DATA_DIR, host, port + 1) if federated else {}
    if peer:
        _prepare_pharmacy(sup, peer)
    _stage("Starting Daphne (HTTP and websockets), a Celery worker and Celery beat")
    # Federated, the console's beat (which starts the demo's stacks) waits for the pairing.
    _spawn_realm(sup, env, host, port, beat=not federated)
    url = f"http://{host}:{port}/"
    if peer:
        _start_pharmacy(sup, env, peer, host, port + 1, own=url.rstrip("/"))
    _wait_until_healthy(sup, f"{url}api/v1/health")
    print(f"\n==> The console is running at {url}  (Ctrl-C stops everything)\n", flush=True)
    if demo:
        print(
            "    The demo domains (healthcare, education, industrial) run on generated data;\n"
            "    DEMO_ENABLED=false turns them off (README: The demo).\n",
            flush=True,
        )
    if peer:
        print(
            f"==> The {PHARMACY_NAME} realm ({PHARMACY_SLUG}) is running at "
            f"{peer['REALM_URL']}/\n"
            "    paired with this one: healthcare's interaction checks ask it for a second\n"
            "    opinion (a remote frame), and now and then its pharmacist must decide.\n"
            f"    Its data: {peer['CONSOLE_DATA_DIR']}, and the database "
            f"{urlsplit(peer['DATABASE_URL']).path.lstrip('/')}.\n",
            flush=True,
        )
    sup.wait()
    return 0


def _prepare_pharmacy(sup: Supervisor, peer: dict[str, str]) -> None:
    folder = Path(peer["CONSOLE_DATA_DIR"])
    create_database(peer["DATABASE_URL"])
    _metrics_clear(folder)
    _ensure_secret_key(folder / "secret_key")
    _prepare(sup, peer, f"the {PHARMACY_NAME} realm's ")


def _start_pharmacy(
    sup: Supervisor, env: dict[str, str], peer: dict[str, str], host: str, port: int, own: str
) -> None:
    """Its processes; once both realms answer, the pairing; then the console's beat."""
    _spawn_realm(sup, peer, host, port, prefix="pharmacy ")
    _wait_until_healthy(sup, f"{peer['REALM_URL']}/api/v1/health", prefix="pharmacy ")
    _wait_until_healthy(sup, f"{own}/api/v1/health", names=("daphne", "worker"))
    _stage(f"Pairing the console with the {PHARMACY_NAME} realm, as both realms' admins")
    federate(env, peer, (env.get("REALM_URL") or own).rstrip("/"))
    _spawn_beat(sup, env)


def _prepare(sup: Supervisor, env: dict[str, str], whose: str) -> None:
    _stage(f"Migrating {whose or 'the '}database")
    _manage(sup, env, "migrate", "--noinput")
    _stage(f"Checking for {whose or 'an '}admin account")
    _manage(sup, env, "ensure_admin", quiet=False)
    _stage(f"Collecting {whose}static files")
    _manage(sup, env, "collectstatic", "--noinput")


def _spawn_realm(
    sup: Supervisor, env: dict[str, str], host: str, port: int, *, prefix="", beat: bool = True
) -> None:
    """Daphne (WEB_PROCESSES of them on the port; the pharmacy's one), a worker and (unless
    told otherwise) beat: one realm's processes."""
    processes = 1 if prefix else web_processes()
    spawn_web(sup, env, host, port, processes, name=f"{prefix}daphne")
    worker = [PYTHON, "-m", "celery", "-A", "console", "worker", "-l", "INFO"]
    hostname = f"{prefix.strip() or 'worker'}@{socket.gethostname()}"
    sup.spawn(
        f"{prefix}worker",
        [*worker, "-n", hostname],
        env={**env, "CONSOLE_PROCESS": "worker"},
        stop_timeout=30,
    )
    if beat:
        _spawn_beat(sup, env, prefix)


def _spawn_beat(sup: Supervisor, env: dict[str, str], prefix: str = "") -> None:
    sup.spawn(
        f"{prefix}beat",
        [PYTHON, "-m", "celery", "-A", "console", "beat", "-l", "INFO"],
        env={**env, "CONSOLE_PROCESS": "beat"},
    )


def _ensure_secret_key(path: Path) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)


def daphne_argv(host: str, port: int) -> list[str]:
    """Daphne, its access log one JSON line a request like every other line (console.web)."""
    return [PYTHON, "-m", "console.web", "-b", host, "-p", str(port), "console.asgi:application"]


def web_processes() -> int:
    """WEB_PROCESSES: Daphne processes serving the console's port, the cores by default."""
    return env_int("WEB_PROCESSES", os.cpu_count() or 1, minimum=1, maximum=64)


def spawn_web(
    sup: Supervisor, env: dict[str, str], host: str, port: int, processes: int, *, name="daphne"
) -> list[subprocess.Popen]:
    """`processes` Daphne processes serving one port. Each is handed a socket of its own
    (`--fd`), bound here to the same address with SO_REUSEPORT (it listens once it is
    ready: console.web), so the kernel spreads the connections evenly over them (one shared
    socket would let whichever process woke first take a whole burst of websockets). This
    process closes its copies: a Daphne that dies takes its socket out of the group, the
    others keep the port, and the supervisor starts another in its place (Supervisor.wait).
    A push reaches each process through Redis (its channel layer's subscriptions). Daphne
    adopts a socket as IPv4 only (Twisted's `fd:` endpoint): an IPv6 HOST gets one process,
    bound by Daphne itself."""
    if ":" in host:
        env = {**env, "CONSOLE_PROCESS": "web"}
        return [sup.spawn(name, daphne_argv(host, port), env=env)]

    def start(number: int) -> subprocess.Popen:
        listening = web_socket(host, port)
        try:
            argv = [PYTHON, "-m", "console.web", "--fd", str(listening.fileno())]
            return start_child(
                [*argv, "console.asgi:application"],
                env={**env, "CONSOLE_PROCESS": "web", "WEB_PROCESS": str(number)},
                pass_fds=(listening.fileno(),),
            )
        finally:
            listening.close()

    spawned = []
    for number in range(1, processes + 1):
        # One that ends on its own is replaced; the others serve the port meanwhile.
        process = start(number)
        sup.adopt(name, process, respawn=partial(start, number))
        spawned.append(process)
    return spawned


def web_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) that other such sockets may share (SO_REUSEPORT); the
    Daphne it is handed to listens on it once it is ready to serve (console.web)."""
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listening.bind((host, port))
    except OSError:
        listening.close()
        raise
    listening.set_inheritable(True)
    return listening


def test(sup: Supervisor, pytest_args: list[str]) -> int:
    """1. Chromium for the browser tests; 2. ruff; 3. services; 4. pytest, browser last."""
    _stage("Checking for Debian's chromium")
    _ensure_chromium()
    failures: list[str] = []
    if not pytest_args:
        _stage("ruff check, ruff format --check and mypy")
        for args in (["check", "."], ["format", "--check", "."]):
            if _call([PYTHON, "-m", "ruff", *args]) != 0:
                failures.append(f"ruff {args[0]}")
        if _call([PYTHON, "-m", "mypy"]) != 0:
            failures.append("mypy")
    data_dir = DATA_DIR / "test"
    env = _child_env(data_dir)
    env.update(DJANGO_SETTINGS_MODULE="tests.settings", DJANGO_SECRET_KEY=secrets.token_urlsafe(50))
    _stage("Starting services for the tests")
    env.update(_start_services(sup, data_dir, free_port(), free_port()))
    runs = [pytest_args] if pytest_args else [["-m", "not browser"], ["-m", "browser"]]
    totals = {"passed": 0, "failed": 0}
    for number, args in enumerate(runs):
        _stage(f"pytest {' '.join(args)}")
        report = data_dir / f"junit-{number}.xml"
        code = _call([PYTHON, "-m", "pytest", f"--junitxml={report}", *args], env=env)
        if code != 0:
            failures.append(f"pytest {' '.join(args)} (exit {code})")
        _add_counts(totals, report)
    sup.stop_all()  # first, so that the summary below is the output's closing line
    print(f"\n==> {'FAILED: ' + '; '.join(failures) if failures else 'All checks passed'}")
    print(f"total: {totals['passed']} passed, {totals['failed']} failed", flush=True)
    return 1 if failures else 0


def _start_services(
    sup: Supervisor, data_dir: Path, pg_port: int, redis_port: int
) -> dict[str, str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    _metrics_clear(data_dir)
    urls: dict[str, str] = {}
    if os.environ.get("DATABASE_URL"):
        print("    PostgreSQL: using DATABASE_URL", flush=True)
    else:
        urls["DATABASE_URL"] = embedded.start_postgres(sup, data_dir, pg_port, "console")
        print(
            f"    PostgreSQL 18 (embedded): 127.0.0.1:{pg_port}, data in {data_dir / 'postgres'}",
            flush=True,
        )
    if os.environ.get("REDIS_URL"):
        print("    Redis: using REDIS_URL", flush=True)
    else:
        urls["REDIS_URL"] = embedded.start_redis(sup, data_dir, redis_port)
        print(
            f"    Redis (embedded): 127.0.0.1:{redis_port}, data in {data_dir / 'redis'}",
            flush=True,
        )
    return urls


def _metrics_clear(data_dir: Path) -> None:
    """Empty the Prometheus multiprocess folder (console.settings) before any process starts:
    the files of an earlier run's processes would otherwise be added to this run's numbers."""
    folder = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or data_dir / "metrics")
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)


def _child_env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "CONSOLE_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


def _manage(sup: Supervisor, env: dict[str, str], *args: str, quiet: bool = True) -> None:
    argv = [PYTHON, str(BASE_DIR / "manage.py"), *args]
    if quiet:
        sup.run_quiet(argv, env=env, what=f"manage.py {' '.join(args)}")
    elif _call(argv, env=env) != 0:
        raise ChildFailed(f"manage.py {' '.join(args)} failed")


def _call(argv: list[str], env: dict[str, str] | None = None) -> int:
    return subprocess.call(argv, env=env, cwd=BASE_DIR)


def _wait_until_healthy(
    sup: Supervisor,
    url: str,
    timeout: float = 120.0,
    *,
    names: tuple[str, ...] = ("daphne", "worker", "beat"),
    prefix: str = "",
) -> None:
    """Until /api/v1/health answers with the database, Redis and at least one worker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in names:
            sup.check_alive(f"{prefix}{name}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 — our own URL
                if b'"workers": 0' not in response.read():
                    return
        except OSError:
            pass
        time.sleep(0.5)
    print(f"    warning: {url} did not report healthy within {timeout:.0f}s", flush=True)


def _ensure_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.geteuid() != 0:
        raise EnvError(
            f"The browser tests need Debian's chromium at {CHROMIUM}. Install it with "
            "'sudo apt-get install chromium', or point CHROMIUM_PATH at a Chromium."
        )
    print("    installing chromium with apt-get (a minute or two)…", flush=True)
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        if _call(argv, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}) != 0:
            raise EnvError(f"'{' '.join(argv)}' failed; install Debian's chromium and retry.")


def _add_counts(totals: dict[str, int], report: Path) -> None:
    if not report.exists():
        return
    for suite in ET.parse(report).getroot().iter("testsuite"):  # noqa: S314 — pytest's own file
        tests, failed = (
            int(suite.get("tests", 0)),
            int(suite.get("failures", 0)) + int(suite.get("errors", 0)),
        )
        skipped = int(suite.get("skipped", 0))
        totals["passed"] += tests - failed - skipped
        totals["failed"] += failed


def _stage(text: str) -> None:
    print(f"==> {text}", flush=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
