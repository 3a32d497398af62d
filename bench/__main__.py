"""Run the benchmarks against their own embedded PostgreSQL and Redis (or DATABASE_URL /
REDIS_URL) and one Celery worker of the machine's cores; print a table and JSON."""

from __future__ import annotations

import json
import os
import platform
import secrets
import sys
import time
import uuid
from typing import Any

from bench.common import wait_until_serving
from common.env import DATA_DIR
from console.launcher import (
    _ensure_chromium,
    _manage,
    _stage,
    _start_services,
    spawn_web,
    web_processes,
)
from console.supervisor import Supervisor, free_port

# Consoles connected while pushes are measured (issue 6): (browsers, events, seconds apart).
# All the browsers share this machine's 2 cores with the console, so the 50 get one event a
# second (an interrupt a second is already a busy ward), the single one five a second, 300
# of them: the p99 of 60 samples had been their second slowest, one stray pause away.
# The 50 go first, on an empty inbox; every escalation is withdrawn once measured (bench.push).
BROWSERS = ((50, 30, 1.0), (1, 300, 0.2))
# Escalations decided from the keyboard by a scripted operator on the inbox (bench.push).
KEYBOARD_DECISIONS = 20
# What `./bin/bench [part …]` can measure; all of them by default, in this order. Peers (the
# same iteration in LangGraph) right after core, whose figures they are compared with, on a
# machine in the same state; the pages last: they seed 10,000 runs and a million iterations.
# `keyboard` (a row of `push`, which measures it too) alone: an escalation decided from the
# keyboard by a scripted operator.
PARTS = ("core", "peers", "oversight", "push", "keyboard", "fanout", "realms", "pages")


def main() -> int:
    parts = sys.argv[1:] or list(PARTS)
    if unknown := [part for part in parts if part not in PARTS]:
        print(
            f"Unknown part {', '.join(unknown)}: choose from {', '.join(PARTS)}.", file=sys.stderr
        )
        return 2
    sup = Supervisor()
    data_dir = DATA_DIR / "bench"
    try:
        if "push" in parts or "keyboard" in parts:
            _ensure_chromium()  # the push figures are measured in real browsers
        _stage("Starting services for the benchmarks")
        env = {
            **os.environ,
            "CONSOLE_DATA_DIR": str(data_dir),
            "PYTHONUNBUFFERED": "1",
            "LOOP_DECLARATIONS": "bench.declarations",
            "DEMO_ENABLED": "false",  # nothing but the benchmark's own work on the machine
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(40),
        }
        web_port = free_port()
        # This console is realm a (./bin/bench realms starts realm b beside it).
        env |= {"REALM_SLUG": "a", "REALM_URL": f"http://127.0.0.1:{web_port}"}
        env["REALM_KEY_FILE"] = str(data_dir / "realm-a" / "ed25519.pem")
        env.update(_start_services(sup, data_dir, free_port(), free_port()))
        _manage(sup, env, "migrate", "--noinput")
        # Every run starts empty: nothing left by an earlier run (its pending interrupts
        # would fill the inboxes the push figures are measured on).
        _manage(sup, env, "flush", "--noinput")
        sup.spawn(
            "worker",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "console",
                "worker",
                "-l",
                "WARNING",
                "-n",
                f"bench-{uuid.uuid4().hex[:6]}@%h",
            ],
            env={**env, "CONSOLE_PROCESS": "bench-worker"},
        )
        _manage(sup, env, "collectstatic", "--noinput")
        # As the run command serves the console: WEB_PROCESSES Daphne processes on one port
        # (the cores by default). The fan-out is also measured through one process, on a
        # port of its own, in the same run (bench.fanout.CONFIGURATIONS).
        webs = {web_processes(): web_port}
        if "fanout" in parts:
            webs.setdefault(1, free_port())
        daphnes = {
            n: [p.pid for p in spawn_web(sup, env, "127.0.0.1", port, n)]
            for n, port in webs.items()
        }
        os.environ.update(env)
        import django

        django.setup()
        for port in webs.values():
            wait_until_serving(f"http://127.0.0.1:{port}")
        results = measure(sup, f"http://127.0.0.1:{web_port}", parts, webs, daphnes)
        if "realms" in parts:
            from bench.realms import realms

            results.update(realms(sup, env, data_dir))
    finally:
        sup.stop_all()
    report(results)
    return 0


def measure(
    sup: Supervisor,
    base_url: str,
    parts: list[str],
    webs: dict[int, int],
    daphnes: dict[int, list[int]],
) -> dict[str, Any]:
    """`webs`: Daphne processes → the port they serve; `daphnes`: → their pids."""
    from console import liveness

    deadline = time.monotonic() + 60
    while liveness.worker_count() < 1:
        sup.check_alive("worker")
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark worker did not come up")
        time.sleep(0.2)
    wait_until_serving(base_url)
    results: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
            "web_processes": web_processes(),
        },
        "parts": parts,
    }
    if "core" in parts or "peers" in parts:  # peers' ratios need our figures of the same run
        from bench.core import core

        results.update(core())
    if "peers" in parts:
        from bench.peers import peers

        results["peers"] = peers(results)
    if "oversight" in parts:
        from bench.oversight import oversight

        results.update(oversight())
    if "push" in parts:
        from bench.push import push_latency

        _stage(f"Measuring pushes to browsers: {' and '.join(str(b[0]) for b in BROWSERS)}")
        results["push"] = [push_latency(base_url, n, samples=k, gap=gap) for n, k, gap in BROWSERS]
    if "push" in parts or "keyboard" in parts:
        from bench.push import keyboard_decisions

        _stage("Measuring escalations decided from the keyboard by a scripted operator")
        results["keyboard"] = keyboard_decisions(base_url, samples=KEYBOARD_DECISIONS)
    if "fanout" in parts:
        from bench.fanout import configurations, fanout_latency

        results["fanout"] = []
        for processes, clients, window in configurations(web_processes()):
            what = "the adaptive window" if window is None else f"a fixed {window} s window"
            _stage(
                f"Measuring fan-out to {clients} websocket client{'s' if clients > 1 else ''}"
                f" through {processes} Daphne process{'es' if processes > 1 else ''}, {what}"
            )
            results["fanout"].append(
                fanout_latency(
                    f"http://127.0.0.1:{webs[processes]}",
                    clients,
                    window=window,
                    daphne_pids=daphnes[processes],
                )
            )
    if "pages" in parts:
        from django.core.management import call_command

        from bench.pages import measure_pages

        # The pages are rendered here, in-process, and name hashed static files: this process
        # read CONSOLE_DATA_DIR before the bench set it (common.env), so its STATIC_ROOT is
        # not the one collected for Daphne above.
        call_command("collectstatic", "--noinput", verbosity=0)
        _stage("Seeding 10,000 runs and 1,000,000 iterations; timing the pages and lists")
        results["pages"] = measure_pages()
    return results


def report(results: dict[str, Any]) -> None:
    """A table of every figure against its target (DESIGN.md section 6), then the JSON."""
    rows: list[tuple[str, Any, str]] = []
    if "iteration_ms" in results:
        from bench.core import rows as core_rows

        rows += core_rows(results)
    if "peers" in results:
        from bench.peers import rows as peers_rows

        rows += peers_rows(results)
    if "halt" in results:
        from bench.oversight import rows as oversight_rows

        rows += oversight_rows(results)
    if "push" in results:
        from bench.push import rows as push_rows

        rows += push_rows(results)
    if "keyboard" in results:
        from bench.push import keyboard_rows

        rows += keyboard_rows(results)
    if "fanout" in results:
        from bench.fanout import rows as fanout_rows

        rows += fanout_rows(results)
    if "realms" in results:
        from bench.realms import rows as realms_rows

        rows += realms_rows(results)
    if "pages" in results:
        from bench.pages import report as pages_report

        print()
        pages_report(results["pages"])
    print()
    for name, value, target in rows:
        print(f"  {name:<48} {value:>15}   {target}")
    if "peers" in results:
        from bench.peers import verdict

        print(f"\n  {verdict(results)}")
    print()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
