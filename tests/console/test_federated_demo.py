"""`./bin/console --federated` (README: The demo): the run command starts a second realm, the
regional pharmacy, beside the first, paired and granted by both realms' admins at start; the
demo's healthcare stacks call into it; a second start reuses it all; SIGINT stops every
process. Real processes on free ports in a temporary data folder, as tests/console/
test_launcher does for one realm; the demo at a fast pace so the first calls come soon."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import httpx
import psutil
import pytest

from console import launcher
from console.federated import PHARMACY_SLUG, pharmacy_env
from console.supervisor import free_port, port_is_free
from tests.conftest import ROOT, wait_for

# The test run's own, which a console started from a shell would not have.
NOT_PASSED = (
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SECRET_KEY",
    "DJANGO_SETTINGS_MODULE",
    "PROMETHEUS_MULTIPROC_DIR",
    "CHANNELS_PREFIX",
    "LOOP_DECLARATIONS",
    "CELERY_BROKER_URL",
    "DEMO_",
    "REALM_",
)


class Federated:
    """The launcher's process and what it serves: the console at port, the pharmacy at +1."""

    def __init__(self, data_dir, port: int, pg_port: int, redis_port: int) -> None:
        self.data_dir, self.port = data_dir, port
        env = {k: v for k, v in os.environ.items() if not k.startswith(NOT_PASSED)}
        env.update(
            CONSOLE_DATA_DIR=str(data_dir),
            PORT=str(port),
            EMBEDDED_PG_PORT=str(pg_port),
            EMBEDDED_REDIS_PORT=str(redis_port),
            # A fast demo, few stacks on two busy cores; a community fill that interacts, where
            # one would, in every pharmacy case (three times the rate, README: The demo).
            DEMO_PACE_SECONDS="1",
            DEMO_RUNS_PER_DOMAIN="1",
            DEMO_ESCALATION_RATE="0.34",
        )
        self.env = env
        # The realms' own environments, as the launcher makes them (for manage.py token).
        self.console_env = {
            **env,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg_port}/console",
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        }
        self.pharmacy_env = pharmacy_env(self.console_env, data_dir, "127.0.0.1", port + 1)
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> str:
        """The launcher's output up to the line saying the console runs."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "console.launcher", "run", "--federated"],
            cwd=ROOT,
            env=self.env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        return self._read_until(f"({PHARMACY_SLUG}) is running at")

    def _read_until(self, marker: str) -> str:
        assert self.process is not None and self.process.stdout is not None
        seen = []
        for line in self.process.stdout:
            seen.append(line)
            if marker in line:
                # From now on the realms' processes log on: read it all, or a full pipe
                # blocks whichever writes next (a Daphne in the middle of a response).
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return "".join(seen)
        raise AssertionError(f"the launcher ended before {marker!r}:\n{''.join(seen)}")

    def stop(self) -> tuple[int, list[str], list[psutil.Process]]:
        """SIGINT (Ctrl-C) to the launcher: its exit code, the command lines of its children,
        and every process it had (theirs too: worker pools, PostgreSQL's backends)."""
        assert self.process is not None
        launcher = psutil.Process(self.process.pid)
        children: list[str] = []
        family = launcher.children(recursive=True)
        for child in launcher.children():
            try:
                children.append(" ".join(child.cmdline()))
            except psutil.NoSuchProcess:
                pass
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(180), children, family

    def token(self, env: dict[str, str]) -> str:
        argv = [sys.executable, "manage.py", "token", "--user", "admin", "--as", "admin"]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        return done.stdout.strip().splitlines()[-1]

    def api(self, port: int, token: str, path: str) -> Any:
        answer = httpx.get(
            f"http://127.0.0.1:{port}{path}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,  # two busy cores: slow is not wrong
            trust_env=False,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()


def _ports() -> tuple[int, int, int]:
    while not port_is_free("127.0.0.1", (port := free_port()) + 1):
        pass
    return port, free_port(), free_port()


def _peer(realms: dict, slug: str) -> dict:
    return next(p for p in realms["peers"] if p["slug"] == slug)


def _eventually(probe: Callable[[], Any], timeout: float = 240) -> Any:
    """Bounded, and generous: the machine runs other suites too."""
    return wait_for(probe, timeout=timeout, interval=1)


def _gone(family: list[psutil.Process]) -> bool:
    return not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def federated(tmp_path):
    realms = Federated(tmp_path, *_ports())
    yield realms
    if realms.process is not None and realms.process.poll() is None:
        realms.stop()


def test_it_runs_two_paired_realms_whose_stacks_call_across_and_stops_them_all(federated):
    output = federated.start()
    console, pharmacy = federated.port, federated.port + 1

    # Both realms' first admins, each password shown once; both URLs.
    assert output.count("password:") == 2
    assert f"The console is running at http://127.0.0.1:{console}/" in output
    assert f"({PHARMACY_SLUG}) is running at http://127.0.0.1:{pharmacy}/" in output
    ours, theirs = federated.token(federated.console_env), federated.token(federated.pharmacy_env)
    for port, token in ((console, ours), (pharmacy, theirs)):
        health = federated.api(port, token, "/api/v1/health")
        assert health["database"] == health["redis"] == "ok" and health["workers"] >= 1

    # Paired both ways, with the grants: the console may call the pharmacy's second opinion,
    # whose interrupts the console's operators may answer, and whose trace it sees in full.
    here = federated.api(console, ours, "/api/v1/realms")
    there = federated.api(pharmacy, theirs, "/api/v1/realms")
    assert there["slug"] == PHARMACY_SLUG and here["slug"] != PHARMACY_SLUG
    assert _peer(here, PHARMACY_SLUG)["status"] == "approved"
    assert _peer(there, here["slug"])["status"] == "approved"
    assert _peer(here, PHARMACY_SLUG)["fingerprint"] == there["fingerprint"]
    out = federated.api(console, ours, f"/api/v1/realms/{PHARMACY_SLUG}/grants")["outbound"]
    into = federated.api(pharmacy, theirs, f"/api/v1/realms/{here['slug']}/grants")["inbound"]
    assert out["blueprints"] == into["blueprints"] == "second-opinion"
    assert into["answer_interrupts"] is True and into["trace"] == "full"

    # A healthcare stack calls into the pharmacy: a remote frame in the console's runs, a run
    # there whose origin names the console.
    def remote_frames():
        runs = federated.api(console, ours, "/api/v1/runs?domain=healthcare&limit=100")
        return [r for r in runs["items"] if (r["remote"] or {}).get("realm") == PHARMACY_SLUG]

    frame = _eventually(remote_frames)[0]
    assert frame["blueprint"] == f"{PHARMACY_SLUG}:second-opinion"
    called = federated.api(pharmacy, theirs, "/api/v1/runs?domain=pharmacy&limit=100")["items"]
    assert any((r["origin"] or {}).get("realm") == here["slug"] for r in called)

    # Most cases have an interacting community fill here: soon one the pharmacist must decide
    # on, raised in the pharmacy by its policy, in work the console asked for.
    def escalated():
        pending = federated.api(pharmacy, theirs, "/api/v1/interrupts?status=pending")
        return [i for i in pending["items"] if "under the floor" in i["reason"]]

    assert _eventually(escalated)

    code, children, family = federated.stop()

    assert code == 0
    # The console's WEB_PROCESSES Daphnes on its port, and the pharmacy's one.
    assert sum("console.web" in c for c in children) == launcher.web_processes() + 1
    assert sum(" worker " in c for c in children) == 2
    assert sum(" beat " in c for c in children) == 2
    wait_for(lambda: _gone(family), timeout=60)

    # A second start reuses both realms' data and their pairing: no new admin, no new
    # request, the same grants.
    output = federated.start()
    code, _, family = federated.stop()

    assert output.count("An admin account exists") == 2 and "password:" not in output
    assert f"{PHARMACY_SLUG} (http://127.0.0.1:{pharmacy}, {there['fingerprint']})" in output
    assert "approved; outbound grant: second-opinion" in output
    assert "approved; inbound grant: second-opinion" in output
    assert code == 0
    wait_for(lambda: _gone(family), timeout=60)
