"""The engine's cost (`./bin/bench core`): one iteration against a bare Celery round trip in
the same run, and the iterations a second of 40 runs at once on the bench's worker."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from typing import Any

from bench.common import REPEATS, summary, wait_all_ended
from console.launcher import _stage


def core() -> dict[str, Any]:
    """The engine's cost: an iteration against a bare Celery round trip, and throughput."""
    from django.conf import settings

    from bench.declarations import ITERATIONS

    _stage("Warming up")
    celery_round_trip_ms(50)
    iteration_latency_ms()
    _stage(f"Measuring ({REPEATS} runs of each)")
    trip = [celery_round_trip_ms(200) for _ in range(REPEATS)]
    iteration = [iteration_latency_ms() for _ in range(REPEATS)]
    throughput = [iterations_per_second(40) for _ in range(3)]
    return {
        "celery_round_trip_ms": summary(trip),
        "iteration_ms": summary(iteration),
        "iteration_vs_round_trip": round(statistics.median(iteration) / statistics.median(trip), 2),
        "iterations_per_second": summary(throughput),
        "notes": f"iteration: one run of {ITERATIONS} iterations, 3 in-process no-op agents, "
        "the next iteration in the same task while its slice lasts (LOOP_STEP_SLICE_SECONDS "
        f"{settings.LOOP_STEP_SLICE_SECONDS}), else one Celery hop; throughput: 40 such runs "
        f"at once, one worker of {os.cpu_count()} processes",
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
    wait_all_ended([run.pk])
    return (time.perf_counter() - began) / run.__class__.objects.get(pk=run.pk).iteration * 1000


def iterations_per_second(runs: int) -> float:
    from loops import services
    from loops.models import Iteration

    began = time.perf_counter()
    ids = [
        services.run_start(domain="bench", blueprint="bench-iterate", input={}).pk
        for _ in range(runs)
    ]
    wait_all_ended(ids, poll=0.1)
    elapsed = time.perf_counter() - began
    return Iteration.objects.filter(run_id__in=ids).count() / elapsed


def rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    return [
        ("bare Celery round trip (ms)", results["celery_round_trip_ms"]["median"], "baseline"),
        (
            "time per iteration, 3 no-op agents (ms)",
            results["iteration_ms"]["median"],
            f"{results['iteration_vs_round_trip']}x the round trip (must ≤ 3x, aim ≤ 2x)",
        ),
        (
            "sustained iterations/s, one 2-core host",
            results["iterations_per_second"]["median"],
            "must ≥ 130, aim ≥ 250",
        ),
    ]
