"""The plan of a seed (bench.seed): one row per run to insert, in a temporary table, with
its id, its place in a stack, its state, how many iterations it has, their pace and times.
The rows of every table are then inserted from it (bench.seed_rows)."""

from __future__ import annotations

from typing import Any

DOMAINS = (("seed-clinic", "Seeded clinic"), ("seed-school", "Seeded school"))
HALTED_DOMAIN = ("seed-lab", "Seeded lab")  # under an active domain halt
HEAVY_SHARE = 0.05
LIVE_SHARE = 0.1


def plan(cursor: Any, runs: int, iterations: int, domains: dict, blueprints: dict) -> None:
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
