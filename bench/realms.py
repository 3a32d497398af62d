"""A call into another realm on loopback (DESIGN.md section 8's targets): `./bin/bench
realms`. bench.__main__ runs its console as realm a; this starts realm b beside it (its own
database on the same PostgreSQL, Redis database 1, a worker and Daphne), pairs the two with
the `realm` command as their admins would, grants bench-*, then runs bench-remote (whose
child is b's bench-echo) one at a time, and bench-local (the same child in this realm) as
the baseline of the same run.

Per call, from the rows both realms wrote (one clock: the same machine):
- call overhead: the frame's `run.started` (the caller decided to call) → the peer's run
  row created (its `created_at`), and → its first step (`iteration.broadcast`);
- result return: the peer's run finished (`finished_at`, committed with its result) → the
  caller's parent's first event after `child.completed` (its next step started).
The local baseline measures the same instants on a local child."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import psycopg

from bench.common import percentiles, wait_all_ended, wait_for, wait_until_serving
from console.launcher import _stage, daphne_argv
from console.supervisor import Supervisor, free_port

SAMPLES = 40
GRANT = ("--blueprints", "bench-*", "--max-depth", "4", "--rate", "100000")


def manage(env: dict[str, str], *args: str) -> str:
    argv = [sys.executable, "manage.py", *args]
    return subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout


def start_b(sup: Supervisor, env: dict[str, str], data_dir) -> tuple[dict[str, str], str]:
    database = "bench_realm_b"
    server = env["DATABASE_URL"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")  # our own name
        conn.execute(f"CREATE DATABASE {database}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    folder = data_dir / "realm-b"
    (folder / "metrics").mkdir(parents=True, exist_ok=True)
    (folder / "ed25519.pem").unlink(missing_ok=True)
    env_b = {
        **env,
        "DATABASE_URL": urlsplit(server)._replace(path=f"/{database}").geturl(),
        "REDIS_URL": urlsplit(env["REDIS_URL"])._replace(path="/1").geturl(),
        "CHANNELS_PREFIX": "realm-b",
        "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics"),
        "REALM_SLUG": "b",
        "REALM_URL": url,
        "REALM_KEY_FILE": str(folder / "ed25519.pem"),
    }
    env_b.pop("CELERY_BROKER_URL", None)
    manage(env_b, "migrate", "--noinput", "-v", "0")
    worker = [sys.executable, "-m", "celery", "-A", "console", "worker", "-l", "WARNING"]
    sup.spawn("worker-b", [*worker, "-n", "bench-b@%h"], env={**env_b, "CONSOLE_PROCESS": "b"})
    sup.spawn("daphne-b", daphne_argv("127.0.0.1", port), env={**env_b, "CONSOLE_PROCESS": "b"})
    wait_until_serving(url)
    return env_b, url


def pair(env_a: dict[str, str], env_b: dict[str, str], url_b: str) -> None:
    from realms.models import Peer

    for env in (env_a, env_b):
        manage(env, "ensure_admin", "--username", "bench")
    fingerprint = manage(env_b, "realm", "show").split("Fingerprint: ")[1].split()[0]
    manage(env_a, "realm", "pair", "--url", url_b, "--fingerprint", fingerprint, "--user", "bench")
    with psycopg.connect(env_b["DATABASE_URL"]) as conn:
        asked = "SELECT count(*) FROM realms_peer WHERE slug = 'a'"
        wait_for(lambda: conn.execute(asked).fetchone()[0] == 1, 30, poll=0.1)  # type: ignore[index]
    manage(env_b, "realm", "approve", "a", "--user", "bench")
    wait_for(lambda: Peer.objects.filter(slug="b", status="approved").exists(), 30, poll=0.1)
    for env, other in ((env_a, "b"), (env_b, "a")):
        for direction in ("inbound", "outbound"):
            manage(
                env, "realm", "grant", other, "--direction", direction, *GRANT, "--user", "bench"
            )


def realms(sup: Supervisor, env: dict[str, str], data_dir) -> dict[str, Any]:
    _stage("Starting realm b and pairing it with this one (a)")
    env_b, url_b = start_b(sup, env, data_dir)
    pair(env, env_b, url_b)
    _stage(f"Measuring {SAMPLES} calls into realm b, and {SAMPLES} into a local child")
    with psycopg.connect(env_b["DATABASE_URL"], autocommit=True) as b:
        remote = [_call("bench-remote", b) for _ in range(SAMPLES)]
        local = [_call("bench-local", None) for _ in range(SAMPLES)]
        _stage(f"Halting {HALTS} of {ACTIVE} runs whose frames work in realm b, one by one")
        hops = halt_hops(b)
    return {
        "realms": {
            name: {
                key: percentiles([s[key] for s in samples if key in s])
                for key in {key for s in samples for key in s}
            }
            for name, samples in (("remote", remote), ("local", local))
        }
        | {"halt": hops}
    }


ACTIVE, HALTS = 100, 20
STARTS = ["iteration.broadcast", "bid.received", "selection.made", "agent.call.requested"]
# b's halt on a's behalf of what one frame's call started there, once it is committed.
HELD = (
    "SELECT h.created_at, i.run_id FROM realms_incoming i "
    "JOIN oversight_halt h ON h.id = i.halt_id WHERE i.key = %s"
)


def halt_hops(b) -> dict[str, Any]:
    """DESIGN.md H8's figure: with ACTIVE runs in a whose frames work in b, a run-scoped halt
    in a → b's halt of what that frame started committed (one hop), HALTS times; then the
    steps b started in a halted tree after its own halt committed (must be 0)."""
    from loops import services
    from loops.models import LoopRun
    from oversight.services import halts

    runs = [
        services.run_start(domain="bench", blueprint="bench-remote-forever", input={})
        for _ in range(ACTIVE)
    ]
    live = "SELECT state, count(*) FROM loops_looprun WHERE origin IS NOT NULL GROUP BY state"
    deadline = time.monotonic() + 120
    while (states := dict(b.execute(live).fetchall())).get("running", 0) < ACTIVE:
        if time.monotonic() > deadline:
            from realms.models import Outgoing

            waiting = Outgoing.objects.filter(delivered_at=None, failed_at=None)
            raise RuntimeError(
                f"b's runs for a: {states}; a's messages waiting: {waiting.count()}, "
                f"{list(waiting.values_list('method', 'last_error')[:3])}"
            )
        time.sleep(0.2)
    samples, halted_at = [], []
    for run in runs[:HALTS]:
        halt, _ = halts.halt_engage(actor=None, scope=f"run:{run.pk}", reason="bench")
        frame = LoopRun.objects.get(parent=run.pk)
        key = f"a:call:{frame.pk}"
        there, root = wait_for(lambda k=key: b.execute(HELD, (k,)).fetchone(), 30, poll=0.002)
        samples.append((there - halt.created_at).total_seconds() * 1000)
        halted_at.append((root, there))
    time.sleep(2)  # steps and calls in flight come and go meanwhile
    late = sum(
        b.execute(
            "SELECT count(*) FROM loops_event WHERE root_id = %s AND type = ANY(%s) AND ts > %s",
            (root, STARTS, at),
        ).fetchone()[0]
        for root, at in halted_at
    )
    for run in runs[HALTS:]:  # the halted ones stay halted: the bench's end stops them
        services.run_cancel(run_id=run.pk, reason="bench over")
    return {"hop_ms": percentiles(samples), "late_steps": late, "active": ACTIVE}


def _call(blueprint: str, b) -> dict[str, float]:
    from loops import services
    from loops.models import Event, LoopRun

    run = services.run_start(domain="bench", blueprint=blueprint, input={})
    wait_all_ended([run.pk], timeout=60)
    frame = LoopRun.objects.get(parent=run.pk)
    assert frame.state == "succeeded", (frame.state, frame.exit_detail)
    events = Event.objects.filter(root_id=run.pk)
    decided = events.get(run=frame, type="run.started").ts
    returned = events.get(run=run, type="child.completed")
    after = events.filter(run=run, seq__gt=returned.seq).order_by("seq").first()
    assert after is not None
    if b is None:  # the local child: its own rows
        created, finished = decided, frame.finished_at
        broadcast = events.filter(run=frame, type="iteration.broadcast").order_by("seq").first()
        assert broadcast is not None
        first = broadcast.ts
    else:
        created, finished, first = b.execute(
            "SELECT r.created_at, r.finished_at, min(e.ts) FROM loops_looprun r "
            "JOIN loops_event e ON e.run_id = r.id AND e.type = 'iteration.broadcast' "
            "WHERE (r.origin->>'run')::bigint = %s GROUP BY r.id",
            (frame.pk,),
        ).fetchone()
    ms = lambda a, z: (z - a).total_seconds() * 1000  # noqa: E731
    sample = {
        "call_to_run_ms": ms(decided, created),
        "call_to_first_step_ms": ms(decided, first),
        "result_to_next_step_ms": ms(finished, after.ts),
    }
    if b is not None:  # where the remote call's time goes, stage by stage
        from realms.models import Outgoing

        queued = Outgoing.objects.get(run_id=frame.pk, method="SendMessage")
        [(arrived,)] = b.execute(
            "SELECT created_at FROM realms_incoming WHERE key = %s", (queued.key,)
        ).fetchall()
        pushed = b.execute(
            "SELECT created_at, delivered_at FROM realms_outgoing WHERE method = 'push' "
            "AND run_id = (SELECT id FROM loops_looprun WHERE (origin->>'run')::bigint = %s)",
            (frame.pk,),
        ).fetchone()
        sample |= {
            "call_decided_to_queued_ms": ms(decided, queued.created_at),
            "call_queued_to_arrived_ms": ms(queued.created_at, arrived),
            "call_arrived_to_run_ms": ms(arrived, created),
            "call_answered_ms": ms(created, queued.delivered_at),
            "push_queued_ms": ms(finished, pushed[0]),
        }
        if pushed[1] is not None:  # the call's own answer may have carried the result first
            sample["push_delivered_ms"] = ms(pushed[0], pushed[1])
    return sample


def rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    got = results["realms"]
    halt = got["halt"]
    out = [
        (
            f"halt in a → b's halt committed, {halt['active']} active (median / p99 ms)",
            f"{halt['hop_ms']['median']} / {halt['hop_ms']['p99']}",
            f"p99 ≤ 1,000 (aim 250) ms per hop; steps in b after its halt: {halt['late_steps']}",
        )
    ]
    for key, name, target in (
        ("call_to_run_ms", "remote call: decide → peer's run started", "p99 ≤ 100 ms"),
        ("call_to_first_step_ms", "remote call: decide → peer's first step", ""),
        ("result_to_next_step_ms", "result committed → caller's next step", "p99 ≤ 100 ms"),
    ):
        r, loc = got["remote"][key], got["local"][key]
        out.append(
            (f"{name} (median / p99 ms)", f"{r['median']} / {r['p99']}",
             f"{target}  (local child: {loc['median']} / {loc['p99']})")
        )  # fmt: skip
    return out
