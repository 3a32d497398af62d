"""What the benchmarks run: three in-process no-op agents, and a bare Celery task as the
baseline. Loaded by the benchmark's worker through LOOP_DECLARATIONS."""

from __future__ import annotations

from functools import cache

import redis
from celery import shared_task
from django.conf import settings

from loops.declare import (
    Bid,
    Escalate,
    Exits,
    Outcome,
    Phase,
    Policy,
    Verdict,
    agent,
    blueprint,
    domain,
    python_agent,
    validator,
)

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


ITERATIONS = 25
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
