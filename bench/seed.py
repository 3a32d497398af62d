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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

DOMAINS = (("seed-clinic", "Seeded clinic"), ("seed-school", "Seeded school"))
HALTED_DOMAIN = ("seed-lab", "Seeded lab")  # under an active domain halt
AGENTS_PER_DOMAIN = 4  # three bid and two are selected, one declines
CALLS_PER_RUN = 10  # iterations with bids and contributions, the newest of each run
CALLS_HEAVY = 200
HEAVY_SHARE = 0.05
LIVE_SHARE = 0.1
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
        _plan(cursor, runs, iterations, domains, blueprints)
        for name, sql in _STEPS:
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


def _plan(cursor: Any, runs: int, iterations: int, domains: dict, blueprints: dict) -> None:
    """seed_plan: one row per run to insert, with its id taken from the sequence, its place
    in the stack, state, number of iterations, pace and times."""
    mains = runs // 4
    subs = 2 * mains
    micros = runs - mains - subs
    slugs = [slug for slug, _ in DOMAINS] + [HALTED_DOMAIN[0]]
    cursor.execute(
        """
        CREATE TEMP TABLE seed_plan ON COMMIT DROP AS
        WITH main AS (
            SELECT nextval(pg_get_serial_sequence('loops_looprun', 'id')) AS id, i,
                   (i %% 3) AS d, i > %(mains)s * (1 - %(live)s) AS live
            FROM generate_series(1, %(mains)s) i
        ), sub AS (
            SELECT nextval(pg_get_serial_sequence('loops_looprun', 'id')) AS id, m.i, m.d,
                   m.live AND j = 1 AS live, m.id AS parent_id, m.id AS root_id, j
            FROM main m CROSS JOIN generate_series(1, 2) j
        ), micro AS (
            SELECT nextval(pg_get_serial_sequence('loops_looprun', 'id')) AS id, s.i, s.d,
                   s.live, s.id AS parent_id, s.root_id
            FROM sub s WHERE s.j = 1 AND s.i <= %(micros)s
        )
        SELECT id, i, d, live, NULL::bigint AS parent_id, id AS root_id, 0 AS depth,
               'main' AS kind, ''::text AS call_key FROM main
        UNION ALL
        SELECT id, i, d, live, parent_id, root_id, 1, 'sub', 'sub#' || j FROM sub
        UNION ALL
        SELECT id, i, d, live, parent_id, root_id, 2, 'micro', 'micro' FROM micro
        """,
        {"mains": mains, "micros": micros, "live": LIVE_SHARE},
    )
    # Domains and blueprints by d; states, iterations and pace by a random draw per run.
    cursor.execute(
        """
        ALTER TABLE seed_plan ADD COLUMN domain_id bigint, ADD COLUMN blueprint_id bigint,
            ADD COLUMN state text, ADD COLUMN prior text DEFAULT '', ADD COLUMN exit text,
            ADD COLUMN n int, ADD COLUMN step interval, ADD COLUMN t0 timestamptz,
            ADD COLUMN heavy boolean DEFAULT false, ADD COLUMN r double precision
        """
    )
    cases = " ".join(f"WHEN {d} THEN {domains[slug]}" for d, slug in enumerate(slugs))
    bps = " ".join(
        f"WHEN d = {d} AND kind = '{kind}' THEN {blueprints[(slug, kind)]}"
        for d, slug in enumerate(slugs)
        for kind in ("main", "sub", "micro")
    )
    cursor.execute(
        f"""
        UPDATE seed_plan SET r = random(), domain_id = CASE d {cases} END,
            blueprint_id = CASE {bps} END,
            step = make_interval(secs => 5 + 25 * random())
        """  # noqa: S608 — ids and literals of our own
    )
    cursor.execute(
        """
        UPDATE seed_plan SET heavy = true WHERE id = (
            SELECT max(id) FROM seed_plan WHERE kind = 'main' AND live AND d = 0
        )
        """
    )
    # Live: mostly running or waiting, some paused or interrupted; halted in the halted
    # domain. Ended: mostly succeeded.
    cursor.execute(
        """
        UPDATE seed_plan SET state = CASE
            WHEN live AND heavy THEN 'running'
            WHEN live AND kind = 'main' AND r < 0.5 THEN 'waiting'
            WHEN live AND r < 0.75 THEN 'running'
            WHEN live AND r < 0.85 THEN 'paused'
            WHEN live AND kind = 'main' THEN 'interrupted'
            WHEN live THEN 'pending'
            WHEN r < 0.70 THEN 'succeeded'
            WHEN r < 0.85 THEN 'exhausted'
            WHEN r < 0.95 THEN 'failed'
            ELSE 'cancelled' END
        """
    )
    # At least one run waits for a decision, at any size: the inbox then reads its history.
    cursor.execute(
        """
        UPDATE seed_plan SET state = 'interrupted' WHERE id = (
            SELECT min(id) FROM seed_plan WHERE kind = 'main' AND live AND d = 1
        )
        """
    )
    cursor.execute(
        """
        UPDATE seed_plan SET exit = CASE state
            WHEN 'succeeded' THEN 'quality' WHEN 'exhausted' THEN 'max_iterations'
            WHEN 'failed' THEN 'validation_exhausted' WHEN 'cancelled' THEN 'cancelled'
            ELSE '' END
        """
    )
    cursor.execute(
        "UPDATE seed_plan SET prior = state, state = 'halted' WHERE live AND d = 2"
        " AND state <> 'pending'"
    )
    # Iterations: weights 6 : 2 : 1 for main, sub and micro, scaled so that the others hold
    # (1 - HEAVY_SHARE) of them; the heavy run takes the rest, to the exact total.
    cursor.execute(
        """
        WITH w AS (
            SELECT sum(CASE kind WHEN 'main' THEN 6 WHEN 'sub' THEN 2 ELSE 1 END * (0.5 + r))
                AS total
            FROM seed_plan WHERE NOT heavy
        )
        UPDATE seed_plan p SET n = greatest(1, floor(
            CASE kind WHEN 'main' THEN 6 WHEN 'sub' THEN 2 ELSE 1 END * (0.5 + p.r)
            * %(share)s / w.total))
        FROM w WHERE NOT p.heavy
        """,
        {"share": iterations * (1 - HEAVY_SHARE)},
    )
    cursor.execute(
        """
        UPDATE seed_plan SET n = greatest(1, %(total)s
            - (SELECT sum(n) FROM seed_plan WHERE NOT heavy)) WHERE heavy
        """,
        {"total": iterations},
    )
    # Ended runs spread over the last 30 days; live ones end their last iteration now.
    cursor.execute(
        """
        UPDATE seed_plan SET t0 = CASE WHEN live OR heavy THEN now() - n * step
            ELSE now() - interval '30 days' * (1.0 - i::float / (SELECT max(i) FROM seed_plan))
                 - n * step - interval '1 hour' END
        """
    )
    cursor.execute("CREATE INDEX ON seed_plan (id)")
    cursor.execute("ANALYZE seed_plan")


_STEPS: list[tuple[str, str]] = [
    (
        "runs",
        """
        INSERT INTO loops_looprun (
            id, blueprint_id, domain_id, parent_id, root_id, depth, call_key, state,
            prior_state, paused_by, phase, iteration, input, context, result, exit_reason,
            exit_detail, cost, cost_reserved, tokens, lease_worker, lease_expires_at,
            created_at, started_at, finished_at, updated_at, created_by_id)
        SELECT id, blueprint_id, domain_id, parent_id, root_id, depth, call_key, state,
            prior, CASE WHEN state = 'paused' THEN 'user:' || %(username)s ELSE '' END,
            0, n, jsonb_build_object('case', id),
            jsonb_build_object('notes', 'seeded', 'iteration', n),
            CASE WHEN state = 'succeeded' THEN jsonb_build_object('answer', id) END,
            exit, '', n * 0.002, 0, n * 40,
            CASE WHEN live THEN 'seed' ELSE '' END,
            CASE WHEN live THEN now() + interval '1 day' END,
            t0, t0, CASE WHEN live THEN NULL ELSE t0 + n * step END,
            CASE WHEN live THEN now() ELSE t0 + n * step END,
            CASE WHEN depth = 0 THEN %(admin)s END
        FROM seed_plan
        """,
    ),
    (
        "iterations",
        """
        INSERT INTO loops_iteration (
            run_id, number, phase, phase_name, status, outcome, broadcast,
            bid_window_ends_at, gather_deadline_at, merged, validation, feedback, rationale,
            started_at, closed_at)
        SELECT p.id, k, 0, 'draft',
            CASE WHEN k = p.n AND p.live THEN 'executing' ELSE 'closed' END,
            CASE WHEN k = p.n AND p.live THEN ''
                 WHEN k = p.n AND p.state = 'succeeded' THEN 'validated'
                 ELSE 'rejected' END,
            jsonb_build_object('task_type', 'seed.draft', 'payload', jsonb_build_object('k', k)),
            p.t0 + (k - 1) * p.step + interval '1 second',
            p.t0 + (k - 1) * p.step + interval '3 seconds',
            CASE WHEN k = p.n AND p.live THEN NULL ELSE jsonb_build_object('text', 'draft') END,
            CASE WHEN k = p.n AND p.live THEN '{}'::jsonb
                 ELSE jsonb_build_object('ok', k = p.n) END,
            '[]'::jsonb, 'seeded',
            p.t0 + (k - 1) * p.step,
            CASE WHEN k = p.n AND p.live THEN NULL ELSE p.t0 + (k - 0.2) * p.step END
        FROM seed_plan p CROSS JOIN LATERAL generate_series(1, p.n) k
        """,
    ),
    (
        "bids",
        """
        INSERT INTO loops_bid (
            iteration_id, agent_id, decision, confidence, est_cost, reason, started_at,
            received_at, late, selected, selection_reason)
        SELECT i.id, a.id, CASE WHEN a.k = 4 THEN 'decline' ELSE 'bid' END,
            CASE WHEN a.k = 4 THEN NULL ELSE 0.9 - a.k * 0.1 END, 0.001, '',
            i.started_at, i.started_at + interval '200 milliseconds' * a.k, false,
            a.k <= 2, CASE WHEN a.k <= 2 THEN 'top confidence' ELSE '' END
        FROM seed_plan p
        JOIN loops_iteration i ON i.run_id = p.id
            AND i.number > p.n - CASE WHEN p.heavy THEN 200 ELSE 10 END
        JOIN (SELECT id, domain_id, row_number() OVER (PARTITION BY domain_id ORDER BY id) k
              FROM loops_agent) a ON a.domain_id = p.domain_id AND a.k <= 4
        """,
    ),
    (
        "contributions",
        """
        INSERT INTO loops_contribution (
            iteration_id, agent_id, status, output, error_class, error, attempts, est_cost,
            confidence, cost, tokens, latency_ms, validated, late, held, counted, started_at,
            finished_at)
        SELECT b.iteration_id, b.agent_id,
            CASE WHEN i.status = 'executing' THEN 'running'
                 WHEN (b.iteration_id + b.agent_id) %% 20 = 0 THEN 'failed'
                 ELSE 'completed' END AS status,
            CASE WHEN i.status = 'closed' THEN jsonb_build_object('text', 'draft') END,
            CASE WHEN i.status = 'closed' AND (b.iteration_id + b.agent_id) %% 20 = 0
                 THEN 'timeout' ELSE '' END,
            CASE WHEN i.status = 'closed' AND (b.iteration_id + b.agent_id) %% 20 = 0
                 THEN 'no answer after 30 s' ELSE '' END,
            jsonb_build_array(jsonb_build_object('n', 1, 'ok', true)), 0.001, b.confidence,
            0.001, 40, 350, i.outcome = 'validated', false, false, true,
            i.started_at + interval '1 second',
            CASE WHEN i.status = 'closed' THEN i.started_at + interval '2 seconds' END
        FROM loops_bid b
        JOIN loops_iteration i ON i.id = b.iteration_id
        JOIN seed_plan p ON p.id = i.run_id
        WHERE b.selected
        """,
    ),
    (
        "events",
        """
        INSERT INTO loops_event (root_id, run_id, seq, type, payload, ts)
        SELECT root_id, run_id,
            row_number() OVER (PARTITION BY root_id ORDER BY ts, run_id, o), type, payload, ts
        FROM (
            SELECT p.root_id, p.id AS run_id, 0 AS o, 'run.started' AS type,
                '{}'::jsonb AS payload, p.t0 AS ts
            FROM seed_plan p
            UNION ALL
            SELECT p.root_id, p.id, 1, 'iteration.broadcast',
                jsonb_build_object('iteration', i.number), i.started_at
            FROM seed_plan p JOIN loops_iteration i ON i.run_id = p.id
                AND i.number > p.n - CASE WHEN p.heavy THEN 200 ELSE 10 END
            UNION ALL
            SELECT p.root_id, p.id, 2, 'iteration.closed',
                jsonb_build_object('iteration', i.number, 'outcome', i.outcome), i.closed_at
            FROM seed_plan p JOIN loops_iteration i ON i.run_id = p.id
                AND i.number > p.n - CASE WHEN p.heavy THEN 200 ELSE 10 END
            WHERE i.closed_at IS NOT NULL
            UNION ALL
            SELECT p.root_id, p.id, 3, 'run.ended', jsonb_build_object('state', p.state),
                p.t0 + p.n * p.step + interval '1 second'
            FROM seed_plan p WHERE NOT p.live
        ) e
        """,
    ),
    (
        "event counters",
        """
        INSERT INTO loops_eventcounter (root_id, last_seq)
        SELECT e.root_id, max(e.seq) FROM loops_event e
        WHERE e.root_id IN (SELECT id FROM seed_plan WHERE depth = 0)
        GROUP BY e.root_id
        """,
    ),
    (
        "pending interrupts",
        """
        INSERT INTO oversight_interrupt (
            run_id, iteration_id, source, address, reason, rationale, proposal, severity,
            status, decision, comment, deadline_at, default_action, tier, created_at)
        SELECT p.id, i.id, 'policy',
            jsonb_build_object('main', p.root_id, 'iteration', p.n),
            'The dose is over its limit', 'seeded', jsonb_build_object('dose', 2),
            CASE WHEN p.r < 0.83 THEN 'critical' ELSE 'warning' END, 'pending', '', '',
            now() + interval '1 day', 'reject', 'operator', now() - interval '5 minutes'
        FROM seed_plan p JOIN loops_iteration i ON i.run_id = p.id AND i.number = p.n
        WHERE p.state = 'interrupted'
        """,
    ),
    (
        "decided interrupts",
        """
        INSERT INTO oversight_interrupt (
            run_id, iteration_id, source, address, reason, rationale, proposal, severity,
            status, decision, comment, decided_by_id, decided_at, deadline_at,
            default_action, tier, created_at)
        SELECT p.id, NULL, 'policy', jsonb_build_object('main', p.root_id),
            'The dose is over its limit', 'seeded', jsonb_build_object('dose', 2), 'warning',
            'decided', CASE WHEN p.r < 0.5 THEN 'approve' ELSE 'reject' END, 'seeded',
            %(admin)s, p.t0 + p.step, p.t0 + interval '1 day', 'reject', 'operator', p.t0
        FROM seed_plan p WHERE p.kind = 'main' AND (p.i %% 4 = 0 OR p.state = 'interrupted')
        """,
    ),
    (
        "audit",
        """
        INSERT INTO oversight_auditevent (
            at, actor_id, actor_name, verb, target_type, target_id, note, before, after, data)
        SELECT p.t0 + p.step * v, CASE WHEN v %% 2 = 0 THEN %(admin)s END,
            CASE WHEN v %% 2 = 0 THEN %(username)s ELSE 'system' END,
            (ARRAY['run.started', 'interrupt.decided', 'run.paused', 'run.resumed',
                   'run.cancelled'])[v],
            'run', p.id::text, 'seeded', jsonb_build_object('state', 'running'),
            jsonb_build_object('state', p.state), '{}'::jsonb
        FROM seed_plan p CROSS JOIN generate_series(1, 5) v
        """,
    ),
    (
        "alerts",
        """
        INSERT INTO oversight_alert (
            kind, level, audience, title, body, target_type, target_id, data, created_at,
            acknowledged_by_id, acknowledged_at)
        SELECT 'run.failed', CASE WHEN p.r < 0.97 THEN 'warning' ELSE 'critical' END,
            'operators', 'Run ' || p.id || ' failed', 'seeded', 'run', p.id::text, '{}'::jsonb,
            p.t0 + p.n * p.step, CASE WHEN p.i %% 50 <> 0 THEN %(admin)s END,
            CASE WHEN p.i %% 50 <> 0 THEN p.t0 + p.n * p.step + interval '10 minutes' END
        FROM seed_plan p WHERE p.state = 'failed' OR p.kind = 'main' AND p.i %% 5 = 0
        """,
    ),
    (
        "lifted halts",
        """
        INSERT INTO oversight_halt (
            scope, kind, run_id, reason, created_by_id, created_at, parked, lifted_by_id,
            lifted_at, lift_reason)
        SELECT 'run:' || p.id, 'run', p.id, 'seeded', %(admin)s, p.t0 + p.step, 1, %(admin)s,
            p.t0 + 2 * p.step, 'seeded'
        FROM seed_plan p WHERE p.kind = 'main' AND p.i %% 25 = 0
        """,
    ),
]


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
