"""What the benchmarks run: three in-process no-op agents, and a bare Celery task as the
baseline. Loaded by the benchmark's worker through LOOP_DECLARATIONS."""

from __future__ import annotations

from functools import cache

import redis
from celery import shared_task
from django.conf import settings

from loops.declare import agent, blueprint, domain, python_agent, validator
from loops.messages import Bid, Outcome, Verdict
from loops.specs import Escalate, Exits, Phase, Policy

domain("bench", "Benchmark")


@python_agent("bench.noop")
class NoOp:
    def bid(self, task):
        return Bid(confidence=0.5)

    def perform(self, task):
        return Outcome(output=None)


for name in ("noop-1", "noop-2", "noop-3"):
    agent("bench", name, implementation="bench.noop", capabilities=("noop",))


@validator("bench.never")
def never(value, context):
    """Reject every round, so one run iterates until its max_iterations."""
    return Verdict(ok=False, feedback="again")


# A run's own costs (its start, the overview pushed as it starts and ends, its first hop)
# are not an iteration's: over 25 iterations they were a quarter of the time per iteration
# (issue 14), over 100 they are a few percent. The peers bench runs as many.
ITERATIONS = 100
blueprint(
    "bench-iterate",
    kind="main",
    domain="bench",
    selection="all",
    merge="collect_all",
    phases=[Phase("noop", task_type="bench.noop", capabilities=("noop",))],
    validators=("bench.never",),
    policy=Policy(exits=Exits(max_iterations=ITERATIONS), validation_rounds=ITERATIONS + 1),
)


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


@shared_task(name="bench.ping", ignore_result=True)
def ping(key: str) -> None:
    """The baseline: a no-op task that says it ran by pushing to a Redis list."""
    _redis().lpush(key, 1)


# --- Oversight: a load that never ends by itself, and a loop that asks a human each time --

blueprint(
    "bench-forever",
    kind="main",
    domain="bench",
    selection="all",
    merge="collect_all",
    phases=[Phase("noop", task_type="bench.noop", capabilities=("noop",))],
    validators=("bench.never",),
    policy=Policy(exits=Exits(max_iterations=100_000), validation_rounds=100_001),
)


@python_agent("bench.proposer")
class Proposer:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        return Outcome(output={"dose": 2})


agent("bench", "proposer", implementation="bench.proposer", capabilities=("propose",))
blueprint(
    "bench-escalate",
    kind="main",
    domain="bench",
    phases=[Phase("propose", task_type="bench.propose", capabilities=("propose",))],
    # Every result is over the limit, so every iteration waits for a decision.
    policy=Policy(
        exits=Exits(quality=("score_target",), score_target=2.0, max_iterations=100_000),
        escalation=Escalate(over={"dose": 1}),
    ),
)


# --- Fan-out (bench.fanout): a busy domain's changes, pushed coalesced to its consoles ------


@shared_task(name="bench.fanout_event", ignore_result=True)
def fanout_event(prefix: str, group: str, window: float | None = None) -> None:
    """One event of a busy domain, on the worker: stamp it (the latest state is its seq, kept
    in Redis with the time of each seq) and push the state after commit, coalesced, through
    the product's path (common.push.push_coalesced_on_commit), as a domain's stack is; in
    the adaptive window, or in `window` seconds (what it was before, compared)."""
    import time

    from django.db import transaction

    from common.push import push_coalesced_on_commit

    client = _redis()
    with transaction.atomic():
        at = time.time()
        seq = client.incr(f"{prefix}:seq")
        client.hset(f"{prefix}:at", str(seq), repr(at))
        push_coalesced_on_commit(
            group, prefix, "bench.declarations.fanout_state", prefix, seconds=window
        )


def fanout_state(prefix: str) -> str:
    """The pushed fragment: the latest state at the moment of rendering, its seq."""
    seq = int(_redis().get(f"{prefix}:seq") or 0)
    return f'<div id="bench-fanout" hx-swap-oob="true" data-seq="{seq}"></div>'


@shared_task(name="bench.fanout_once", ignore_result=True)
def fanout_once(prefix: str, group: str, n: int) -> None:
    """One event pushed at once, uncoalesced (common.push.push_on_commit), stamped here."""
    import time

    from django.db import transaction

    from common.push import push_on_commit

    with transaction.atomic():
        _redis().hset(f"{prefix}:once", str(n), repr(time.time()))
        push_on_commit(
            group, lambda: f'<div id="bench-fanout-once" hx-swap-oob="true" data-once="{n}"></div>'
        )


# --- Realms (DESIGN.md section 8): the same call to a child, in this realm and in realm b --

blueprint(
    "bench-echo",
    kind="micro",
    domain="bench",
    phases=[Phase("noop", task_type="bench.noop", capabilities=("noop",))],
    policy=Policy(exits=Exits(max_iterations=3)),
    bid_window_ms=500,
    export=True,
)
for _name, _child in (("bench-local", "bench-echo"), ("bench-remote", "b:bench-echo")):
    blueprint(
        _name,
        kind="main",
        domain="bench",
        phases=[Phase("call", call=(_child,))],
        children=(_child,),
        policy=Policy(exits=Exits(max_iterations=3)),
    )

# A remote frame that works until a halt: bench-remote-forever (a) → b's bench-forever-echo.
blueprint(
    "bench-forever-echo",
    kind="micro",
    domain="bench",
    selection="all",
    merge="collect_all",
    phases=[Phase("noop", task_type="bench.noop", capabilities=("noop",))],
    validators=("bench.never",),
    policy=Policy(exits=Exits(max_iterations=100_000), validation_rounds=100_001),
    export=True,
)
blueprint(
    "bench-remote-forever",
    kind="main",
    domain="bench",
    phases=[Phase("call", call=("b:bench-forever-echo",))],
    children=("b:bench-forever-echo",),
    policy=Policy(exits=Exits(max_iterations=3)),
)
