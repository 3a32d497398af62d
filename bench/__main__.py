"""Run the benchmarks against their own embedded PostgreSQL and Redis (or DATABASE_URL /
REDIS_URL) and one Celery worker of the machine's cores; print a table and JSON."""

from __future__ import annotations

import json
import os
import platform
import secrets
import statistics
import sys
import time
import uuid
from typing import Any

from common.env import DATA_DIR
from console.launcher import _ensure_chromium, _manage, _stage, _start_services
from console.supervisor import Supervisor, free_port

REPEATS = 5
DAPHNE_APP = "console.asgi:application"
# Consoles connected while pushes are measured (issue 6): (browsers, events, seconds apart).
# All the browsers share this machine's 2 cores with the console, so the 50 get one event a
# second (an interrupt a second is already a busy ward), the single one five a second.
# The 50 go first, on an empty inbox; the single one then has their 30 interrupts on its page.
BROWSERS = ((50, 30, 1.0), (1, 60, 0.2))
# Websocket clients while the worker emits 100 events/s (bench.fanout).
CLIENTS = (1, 50, 200)
# What `./bin/bench [part …]` can measure; all of them by default, in this order. The pages
# go last: they seed 10,000 runs and a million iterations into the same database.
PARTS = ("core", "oversight", "push", "fanout", "pages")


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
        if "push" in parts:
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
        web_port = free_port()
        daphne = sup.spawn(
            "daphne",
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(web_port), DAPHNE_APP],
            env={**env, "CONSOLE_PROCESS": "web"},
        )
        os.environ.update(env)
        import django

        django.setup()
        results = measure(sup, f"http://127.0.0.1:{web_port}", parts, daphne.pid)
    finally:
        sup.stop_all()
    report(results)
    return 0


def measure(sup: Supervisor, base_url: str, parts: list[str], daphne_pid: int) -> dict[str, Any]:
    from bench.push import wait_until_serving
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
        },
        "parts": parts,
    }
    if "core" in parts:
        results.update(core())
    if "oversight" in parts:
        _stage("Measuring oversight: decisions under load, then halts of 1,000 runs")
        results["decision_to_next_step_ms"] = _percentiles(
            decision_to_next_step_ms(load=200, samples=30)
        )
        results["halt"] = halt_of_active_runs(runs=1000, repeats=REPEATS * 2)
    if "push" in parts:
        from bench.push import push_latency

        _stage(f"Measuring pushes to browsers: {' and '.join(str(b[0]) for b in BROWSERS)}")
        results["push"] = [push_latency(base_url, n, samples=k, gap=gap) for n, k, gap in BROWSERS]
    if "fanout" in parts:
        from bench.fanout import fanout_latency

        results["fanout"] = []
        for n in CLIENTS:
            _stage(f"Measuring fan-out to {n} websocket client{'s' if n > 1 else ''}")
            results["fanout"].append(fanout_latency(base_url, n, daphne_pid=daphne_pid))
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


def core() -> dict[str, Any]:
    """The engine's cost: an iteration against a bare Celery round trip, and throughput."""
    from bench.declarations import ITERATIONS

    _stage("Warming up")
    celery_round_trip_ms(50)
    iteration_latency_ms()
    _stage(f"Measuring ({REPEATS} runs of each)")
    trip = [celery_round_trip_ms(200) for _ in range(REPEATS)]
    iteration = [iteration_latency_ms() for _ in range(REPEATS)]
    throughput = [iterations_per_second(40) for _ in range(3)]
    return {
        "celery_round_trip_ms": _summary(trip),
        "iteration_ms": _summary(iteration),
        "iteration_vs_round_trip": round(statistics.median(iteration) / statistics.median(trip), 2),
        "iterations_per_second": _summary(throughput),
        "notes": f"iteration: one run of {ITERATIONS} iterations, 3 in-process no-op agents, "
        "one Celery hop per iteration; throughput: 40 such runs at once, one worker "
        f"of {os.cpu_count()} processes",
    }


def celery_round_trip_ms(n: int) -> float:
    """Mean of n sequential no-op task round trips: send, run on the worker, observe."""
    import redis
    from django.conf import settings

    from bench.declarations import ping

    client, key = redis.Redis.from_url(settings.REDIS_URL), f"bench:{uuid.uuid4().hex}"
    began = time.perf_counter()
    for _ in range(n):
        ping.delay(key)
        client.blpop([key], timeout=10)
    return (time.perf_counter() - began) / n * 1000


def iteration_latency_ms() -> float:
    """Wall time per iteration of one run iterating alone, start to end."""
    from loops import services

    began = time.perf_counter()
    run = services.run_start(domain="bench", blueprint="bench-iterate", input={})
    _wait_all_ended([run.pk])
    return (time.perf_counter() - began) / run.__class__.objects.get(pk=run.pk).iteration * 1000


def iterations_per_second(runs: int) -> float:
    from loops import services
    from loops.models import Iteration

    began = time.perf_counter()
    ids = [
        services.run_start(domain="bench", blueprint="bench-iterate", input={}).pk
        for _ in range(runs)
    ]
    _wait_all_ended(ids, poll=0.1)
    elapsed = time.perf_counter() - began
    return Iteration.objects.filter(run_id__in=ids).count() / elapsed


def _admin():
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username="bench-admin")
    user.is_superuser = True
    user.save()
    return user


def _stop_all(domain: str = "bench") -> None:
    from loops import services
    from loops.models import LoopRun

    for pk in (
        LoopRun.objects.filter(domain__slug=domain)
        .exclude(state__in=LoopRun.TERMINAL)
        .values_list("pk", flat=True)
    ):
        services.run_cancel(run_id=pk)


def decision_to_next_step_ms(load: int, samples: int) -> list[float]:
    """From a decision's commit to the start of the step that applies it, while `load`
    other runs keep the worker's queue full: the urgent queue is what keeps this short."""
    from loops import services
    from loops.models import Event
    from oversight.models import Interrupt
    from oversight.services import interrupts

    admin = _admin()
    for _ in range(load):
        services.run_start(domain="bench", blueprint="bench-forever", input={})
    run = services.run_start(domain="bench", blueprint="bench-escalate", input={})
    waits = []
    for _ in range(samples):
        pending = _wait_for(
            lambda: Interrupt.objects.filter(run=run, status="pending").first(), timeout=120
        )
        decided = interrupts.interrupt_decide(
            interrupt_id=pending.pk, actor=admin, decision="approve"
        )
        applied = _wait_for(
            lambda at=decided.decided_at: Event.objects.filter(
                run=run, type="decision.applied", ts__gte=at
            ).first()
        )
        waits.append((applied.ts - decided.decided_at).total_seconds() * 1000)
    _stop_all()
    return waits


def halt_of_active_runs(runs: int, repeats: int) -> dict[str, Any]:
    """Halt a domain of `runs` live runs that are stepping on the worker, `repeats` times:
    how long the halt's transaction takes (request to commit, which parks every run), that
    no run is left unhalted at the commit, and that no step starts after it."""
    from loops import services
    from loops.models import Event, LoopRun
    from oversight.services import halts

    admin = _admin()
    ids = [
        services.run_start(domain="bench", blueprint="bench-forever", input={}).pk
        for _ in range(runs)
    ]
    live = LoopRun.objects.filter(pk__in=ids).exclude(state__in=LoopRun.TERMINAL)
    commit_ms, unhalted, started_after = [], [], 0
    for _ in range(repeats):
        time.sleep(1.0)  # the worker steps them meanwhile
        began = time.perf_counter()
        halt, _ = halts.halt_engage(actor=admin, scope="domain:bench", reason="bench")
        commit_ms.append((time.perf_counter() - began) * 1000)
        unhalted.append(live.exclude(state="halted").count())
        time.sleep(0.5)  # anything that would start after the commit has had its chance
        started_after += Event.objects.filter(
            run_id__in=ids,
            ts__gt=halt.created_at,
            type__in=["iteration.broadcast", "bid.received", "agent.call.requested"],
        ).count()
        halts.halt_lift(halt_id=halt.pk, actor=admin, reason="bench")
    _stop_all()
    return {
        "runs": runs,
        "halt_commit_ms": _percentiles(commit_ms),
        "runs_not_halted_at_commit": max(unhalted),
        "steps_started_after_commit": started_after,
    }


def _wait_for(predicate, timeout: float = 30, poll: float = 0.002):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark waited too long")
        time.sleep(poll)
    return result


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "median": round(statistics.median(values), 2),
        "p99": round(p99, 2),
        "max": round(max(values), 2),
        "samples": len(values),
    }


def _wait_all_ended(ids: list[int], timeout: float = 300, poll: float = 0.01) -> None:
    from loops.models import LoopRun

    deadline = time.monotonic() + timeout
    while LoopRun.objects.filter(pk__in=ids).exclude(state__in=LoopRun.TERMINAL).exists():
        if time.monotonic() > deadline:
            raise RuntimeError("runs did not finish in time")
        time.sleep(poll)  # the poll costs CPU the worker needs: not too often


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
        "runs": len(values),
    }


def report(results: dict[str, Any]) -> None:
    """A table of every figure against its target (DESIGN.md section 6), then the JSON."""
    rows: list[tuple[str, Any, str]] = []
    if "iteration_ms" in results:
        rows += _core_rows(results)
    if "halt" in results:
        rows += _oversight_rows(results)
    for push in results.get("push", []):
        n, event, bare = push["browsers"], push["event_ms"], push["bare_push_ms"]
        rows.append(
            (
                f"worker event → in the DOM, {n} browser{'s' if n > 1 else ''} (ms)",
                f"{event['median']} / {event['p99']}",
                f"median / p99; bare push {bare['median']} / {bare['p99']}, "
                f"{push['event_vs_bare_push']}x; {push['missed']} missed"
                + (" (must p99 ≤ 20, aim ≤ 5)" if n == 1 else ""),
            )
        )
    for fan in results.get("fanout", []):
        n, event, raw = fan["clients"], fan["event_ms"], fan["raw_pubsub_ms"]
        once = fan["uncoalesced_ms"]
        target = " (must p99 ≤ 250, aim ≤ 100)" if n >= 200 else ""
        rows += [
            (
                f"100 events/s → {n} websocket client{'s' if n > 1 else ''} (ms)",
                f"{event['median']} / {event['p99']}",
                f"median / p99, coalesced; raw pub/sub {raw['median']} / {raw['p99']}, "
                f"{fan['event_vs_raw']}x; {fan['clients_missing_final_state']} missed the "
                f"latest state{target}",
            ),
            (
                f"  one event alone → {n} client{'s' if n > 1 else ''} (ms)",
                f"{once['median']} / {once['p99']}",
                f"median / p99, uncoalesced; {once['missed']} missed"
                + (" (must p99 ≤ 20, aim ≤ 5)" if n == 1 else ""),
            ),
        ]
    if "pages" in results:
        from bench.pages import report as pages_report

        print()
        pages_report(results["pages"])
    print()
    for name, value, target in rows:
        print(f"  {name:<48} {value:>15}   {target}")
    print()
    print(json.dumps(results, indent=2))


def _core_rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    return [
        ("bare Celery round trip (ms)", results["celery_round_trip_ms"]["median"], "baseline"),
        (
            "time per iteration, 3 no-op agents (ms)",
            results["iteration_ms"]["median"],
            f"{results['iteration_vs_round_trip']}x the round trip (must ≤ 4x, aim ≤ 2x)",
        ),
        (
            "sustained iterations/s, one 2-core host",
            results["iterations_per_second"]["median"],
            "must ≥ 100, aim ≥ 250",
        ),
    ]


def _oversight_rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    decision, halt = results["decision_to_next_step_ms"], results["halt"]
    return [
        (
            "decision → next step, 200 runs queued (ms)",
            f"{decision['median']} / {decision['p99']}",
            "median / p99 (must p99 ≤ 100, aim ≤ 25)",
        ),
        (
            f"halt of {halt['runs']} active runs, request → commit (ms)",
            f"{halt['halt_commit_ms']['median']} / {halt['halt_commit_ms']['p99']}",
            f"median / p99; {halt['runs_not_halted_at_commit']} runs not halted at commit, "
            f"{halt['steps_started_after_commit']} steps after (must p99 ≤ 500, 0 steps)",
        ),
    ]


if __name__ == "__main__":
    sys.exit(main())
