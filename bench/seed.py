"""Seed a large, realistic data set in bulk for the page benchmarks (bench.pages, issue 8).

Set-based SQL only (INSERT … SELECT over generate_series), so 10,000 runs and 1,000,000
iteration rows take seconds, not the hours the ORM would. Additive: every call adds its
runs under three seeded domains (created on the first call), beside whatever the database
holds already (the other benchmarks' runs), and respects the schema's keys and checks: one
pending interrupt per run, gapless trace seqs per root with their counters, one active halt
per scope.

The shape, per four runs: one main loop, two sub-loops under it, one micro-loop under one of
the subs. Most runs have ended; the newest tenth are live (running, waiting, paused,
interrupted; halted in the halted domain), with their iterations up to now, so that the
activity charts and sparklines have the last hour to draw. One run (the newest main loop) is
heavy: about 5 % of the iterations, to time the run page of a run with many. Bids and
contributions are seeded for the last 10 iterations of every run and the last 200 of the
heavy one (the pages read those); the trace holds each run's start and end and the broadcast
and close of those iterations.

Here: the registry (domains, agents, blueprints), the halt and the breakers, and the order
of the work; the plan of the runs is bench.seed_plan, the SQL of each table's rows
bench.seed_rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from bench.seed_plan import DOMAINS, HALTED_DOMAIN, plan
from bench.seed_rows import STEPS

AGENTS_PER_DOMAIN = 4  # three bid and two are selected, one declines
CALLS_PER_RUN = 10  # iterations with bids and contributions, the newest of each run
CALLS_HEAVY = 200
USERNAME = "bench-admin"
TABLES = (
    "loops_looprun",
    "loops_iteration",
    "loops_bid",
    "loops_contribution",
    "loops_event",
    "loops_eventcounter",
    "oversight_interrupt",
    "oversight_auditevent",
    "oversight_alert",
    "oversight_halt",
    "oversight_circuitbreaker",
)


@dataclass
class Seeded:
    runs: int = 0
    iterations: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    heavy_run: int = 0
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)  # where the time went


def seed(*, runs: int = 10_000, iterations: int = 1_000_000, analyze: bool = True) -> Seeded:
    """Add `runs` runs with `iterations` iteration rows between them (and what goes with
    them); returns the counts, the heavy run's id and the time it took."""
    if runs < 8 or iterations < runs:
        raise ValueError("seed at least 8 runs and one iteration per run")
    began = time.perf_counter()
    result = Seeded()
    with transaction.atomic(), connection.cursor() as cursor:
        admin = _admin_id()
        domains, agents, blueprints = _registry()
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("DROP TABLE IF EXISTS seed_plan")
        plan(cursor, runs, iterations, domains, blueprints)
        for name, sql in STEPS:
            step = time.perf_counter()
            cursor.execute(sql, {"admin": admin, "username": USERNAME})
            result.rows[name] = max(cursor.rowcount, 0)
            result.step_seconds[name] = round(time.perf_counter() - step, 1)
        cursor.execute("SELECT id FROM seed_plan WHERE heavy")
        result.heavy_run = cursor.fetchone()[0]
        cursor.execute("DROP TABLE seed_plan")
        _halt_domain(admin, domains[HALTED_DOMAIN[0]])
        _breakers(cursor, agents, blueprints, domains)
    if analyze:  # and vacuum, as autovacuum would have: index-only scans need it
        step = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")
        result.step_seconds["vacuum analyze"] = round(time.perf_counter() - step, 1)
    result.runs, result.iterations = result.rows["runs"], result.rows["iterations"]
    result.seconds = round(time.perf_counter() - began, 1)
    return result


def _admin_id() -> int:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    if not user.is_superuser:
        user.is_superuser = True
        user.save(update_fields=["is_superuser"])
    return user.pk


def _registry() -> tuple[dict[str, int], list[tuple[int, int, int]], dict[tuple[str, str], int]]:
    """The seeded domains, their agents (id, domain id, ordinal from 1) and blueprints."""
    from loops.models import Agent, AgentStat, Blueprint, Domain

    domains, agents, blueprints = {}, [], {}
    for slug, name in (*DOMAINS, HALTED_DOMAIN):
        domain, _ = Domain.objects.get_or_create(slug=slug, defaults={"name": name})
        domains[slug] = domain.pk
        for k in range(1, AGENTS_PER_DOMAIN + 1):
            agent, created = Agent.objects.get_or_create(
                domain=domain,
                name=f"agent-{k}",
                defaults={"capabilities": ["draft"], "task_types": ["seed.draft"]},
            )
            if created:
                AgentStat.objects.create(
                    agent=agent, task_type="seed.draft", alpha=20 + k, beta=3 + k, n=20 + 2 * k
                )
            agents.append((agent.pk, domain.pk, k))
        for kind in ("main", "sub", "micro"):
            phases = [{"name": "draft", "task_type": "seed.draft", "capabilities": ["draft"]}]
            blueprint, _ = Blueprint.objects.get_or_create(
                name=f"{slug}-{kind}",
                defaults={"kind": kind, "domain": domain, "spec": {"phases": phases}},
            )
            blueprints[(slug, kind)] = blueprint.pk
    return domains, agents, blueprints


def _halt_domain(admin: int, domain_id: int) -> None:
    """The halted domain's active halt, unless it has one."""
    from oversight.models import Halt

    scope = f"domain:{HALTED_DOMAIN[0]}"
    if not Halt.objects.filter(scope=scope, lifted_at__isnull=True).exists():
        Halt.objects.create(
            scope=scope,
            kind=Halt.Kind.DOMAIN,
            domain_id=domain_id,
            reason="seeded",
            created_by_id=admin,
        )


def _breakers(cursor: Any, agents: list, blueprints: dict, domains: dict) -> None:
    """A breaker per seeded agent, blueprint and domain (created once; every tenth open,
    forced, so no sweep closes it), each with a history of trips in the audit log."""
    from oversight.models import CircuitBreaker

    if CircuitBreaker.objects.filter(name__startswith="seed-").exists():
        return
    rows = [
        CircuitBreaker(
            name=f"seed-agent-{pk}",
            scope="agent",
            agent_id=pk,
            metric="consecutive_failures",
            threshold=5,
        )
        for pk, _, _ in agents
    ]
    rows += [
        CircuitBreaker(
            name=f"seed-blueprint-{pk}",
            scope="blueprint",
            blueprint_id=pk,
            metric="error_rate",
            threshold=0.5,
        )
        for pk in blueprints.values()
    ]
    rows += [
        CircuitBreaker(
            name=f"seed-domain-{pk}",
            scope="domain",
            domain_id=pk,
            metric="cost_window",
            threshold=10,
        )
        for pk in domains.values()
    ]
    for i, row in enumerate(rows):
        if i % 10 == 0:
            row.state, row.forced, row.last_reason = "open", True, "seeded"
    created = CircuitBreaker.objects.bulk_create(rows)
    cursor.execute(
        """
        INSERT INTO oversight_auditevent (
            at, actor_name, verb, target_type, target_id, note, data)
        SELECT now() - interval '1 hour' * k, 'system',
            (ARRAY['breaker.opened', 'breaker.half_opened', 'breaker.closed'])[1 + k %% 3],
            'breaker', b::text, 'seeded', '{}'::jsonb
        FROM unnest(%(ids)s::bigint[]) b CROSS JOIN generate_series(1, 30) k
        """,
        {"ids": [b.pk for b in created]},
    )


def main() -> None:
    """python -m bench.seed [RUNS ITERATIONS], against the configured database."""
    import os
    import sys

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings")
    django.setup()
    runs, iterations = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (10_000, 1_000_000)
    done = seed(runs=runs, iterations=iterations)
    print(f"seeded in {done.seconds} s: {done.rows}; heavy run {done.heavy_run}")


if __name__ == "__main__":
    main()
