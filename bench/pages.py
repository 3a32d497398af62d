"""Server time and query count of the console pages and the API lists (DESIGN.md section 6:
≤ 150 ms, aim ≤ 50 ms, at 10,000 runs and 1,000,000 iteration rows; the query count
independent of the data size). Issue 8.

Each page is asked for in-process through Django's test client against the real database,
signed in as an admin (pages) or with the admin's bearer token (API): one warm-up request,
REPEATS timed ones, and one more whose queries are counted (with their database time).
Twice: after seeding a small data set (bench.seed), then after seeding the rest up to the
full size, so that every row shows the query count at both sizes.

    ./bin/bench pages    its own PostgreSQL and Redis (bench.__main__), emptied first
    measure_pages()      after django.setup() with the services running (the bench's full
                         run calls it last: it adds to what is there)
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

REPEATS = 7
SMALL = (100, 10_000)  # runs, iterations
LARGE = (10_000, 1_000_000)

# (name, path); {domain}, {run} (the seed's heavy run) and {halt} (an active halt) are
# filled in for each size.
PAGES = (
    ("overview", "/"),
    ("domain page", "/loops/domains/{domain}/"),
    ("run page, newest iterations", "/loops/runs/{run}/"),
    ("run page, iterations page 100", "/loops/runs/{run}/?page=100"),
    ("approval inbox", "/oversight/inbox/"),
    ("breakers", "/oversight/breakers/"),
    ("agents", "/loops/agents/"),
    ("audit log", "/oversight/audit/"),
    ("audit log, filtered", "/oversight/audit/?verb=run.&target_type=run"),
    ("halt (new)", "/oversight/halts/new?scope=domain:{domain}"),
    ("halt (lift)", "/oversight/halts/{halt}/lift"),
)
LISTS = (
    ("API runs", "/api/v1/runs"),
    ("API runs of a domain, running", "/api/v1/runs?domain={domain}&state=running"),
    ("API runs of a stack", "/api/v1/runs?root={run}"),
    ("API run iterations", "/api/v1/runs/{run}/iterations"),
    ("API interrupts, pending", "/api/v1/interrupts?status=pending"),
    ("API alerts", "/api/v1/alerts"),
    ("API audit", "/api/v1/audit"),
    ("API agents", "/api/v1/agents"),
    ("API breakers", "/api/v1/breakers"),
    ("API halts, active", "/api/v1/halts?active=true"),
    ("API domains", "/api/v1/domains"),
)


def measure_pages(
    *, small: tuple[int, int] = SMALL, large: tuple[int, int] = LARGE, repeats: int = REPEATS
) -> dict[str, Any]:
    """Seed the small set and time every page and list; seed up to the large set and time
    them again. Returns the seeds and one row per page: median and p95 ms at full size, and
    the queries at both sizes."""
    from bench.seed import DOMAINS, seed

    domain = DOMAINS[0][0]
    first = seed(runs=small[0], iterations=small[1])
    _roll_up()
    at_small = _time_all(domain, first.heavy_run, repeats)
    second = seed(runs=large[0] - small[0], iterations=large[1] - small[1])
    _roll_up()
    at_large = _time_all(domain, second.heavy_run, repeats)
    rows = []
    for name, path in (*PAGES, *LISTS):
        s, big = at_small[name], at_large[name]
        rows.append(
            {
                "name": name,
                "path": path,
                "median_ms": big["median_ms"],
                "p95_ms": big["p95_ms"],
                "db_ms": big["db_ms"],
                "median_ms_small": s["median_ms"],
                "queries_small": s["queries"],
                "queries_large": big["queries"],
                "bytes": big["bytes"],
            }
        )
    return {
        "seed": [_seed_summary(first), _seed_summary(second)],
        "totals": _totals(),
        "pages": rows,
        "notes": f"in-process test client, signed in as an admin; one warm-up request, the "
        f"median and p95 of {repeats}, then one whose queries are counted (db_ms: their "
        "time); 'small' after the first seed",
    }


def _roll_up() -> None:
    """What the console's beat does every few seconds (loops.tasks.domain_minutes_sweep), for
    the seed's last hour: it inserts iterations and calls with SQL, in past minutes."""
    from datetime import timedelta

    from django.utils import timezone

    from loops.rollup import domain_minutes_sweep

    domain_minutes_sweep(since=timezone.now() - timedelta(hours=1, minutes=1))


def _seed_summary(done: Any) -> dict[str, Any]:
    return {
        "seconds": done.seconds,
        "rows": done.rows,
        "step_seconds": done.step_seconds,
        "heavy_run": done.heavy_run,
    }


def _totals() -> dict[str, int]:
    from loops.models import Iteration, LoopRun

    return {"runs": LoopRun.objects.count(), "iterations": Iteration.objects.count()}


def _time_all(domain: str, run: int, repeats: int) -> dict[str, dict[str, Any]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    from bench.seed import USERNAME
    from console.auth import token_create
    from oversight.models import Halt

    admin = get_user_model().objects.get(username=USERNAME)
    browser = Client(SERVER_NAME="localhost")
    browser.force_login(admin)
    api = Client(
        SERVER_NAME="localhost", headers={"Authorization": f"Bearer {token_create(user=admin)}"}
    )
    halt = Halt.objects.filter(lifted_at__isnull=True).order_by("id").values_list("pk", flat=True)
    fill = {"domain": domain, "run": run, "halt": halt.first() or 0}
    results = {}
    for client, table in ((browser, PAGES), (api, LISTS)):
        for name, path in table:
            results[name] = _time_one(client, path.format(**fill), repeats)
    return results


def _time_one(client: Any, path: str, repeats: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(path)  # the warm-up
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}")
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        client.get(path)
        times.append((time.perf_counter() - began) * 1000)
    with CaptureQueriesContext(connection) as captured:  # one more, untimed, its queries
        client.get(path)
    queries = list(captured.captured_queries)  # now: the next request clears the log
    ordered = sorted(times)
    return {
        "median_ms": round(statistics.median(times), 1),
        "p95_ms": round(ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))], 1),
        "queries": len(queries),
        "db_ms": round(sum(float(q["time"]) for q in queries) * 1000, 1),
        "bytes": len(response.content),
    }


def report(results: dict[str, Any]) -> None:
    for done in results["seed"]:
        rows = ", ".join(f"{n} {k}" for k, n in done["rows"].items())
        print(f"  seeded in {done['seconds']} s: {rows}")
    totals = results["totals"]
    print(f"  in the database: {totals['runs']:,} runs, {totals['iterations']:,} iterations")
    print()
    print(f"  {'page or list':<32} {'median':>7} {'p95':>7} {'db':>6}  queries small → large")
    for row in results["pages"]:
        print(
            f"  {row['name']:<32} {row['median_ms']:>7} {row['p95_ms']:>7} {row['db_ms']:>6}  "
            f"{row['queries_small']} → {row['queries_large']}"
        )
    print()
    print(json.dumps(results, indent=2))
