"""The rows of a seed (bench.seed): for each table, in order, one INSERT … SELECT from the
plan (bench.seed_plan), as (name, SQL). The parameters: %(admin)s, the admin's id, and
%(username)s, their name."""

from __future__ import annotations

STEPS: list[tuple[str, str]] = [
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
