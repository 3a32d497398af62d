"""Loops the breaker tests run: the plant domain (tests.settings names this module).

Its agents fail on demand, take their time, cost and report a temperature, and each has a
circuit breaker watching one metric (CONCEPTS 41). The limits are far enough from what the
other tests do that only a test that means to trip a breaker trips it.
"""

from __future__ import annotations

import time

from loops.declare import agent, blueprint, breaker, domain, python_agent, validator
from loops.messages import Bid, Outcome, Verdict
from loops.specs import Exits, Phase, Policy

domain("plant", "Plant", "Loops whose agents fail, slow down and cost.")

# The in-process switch of the flaky agent; a run's input {"fail": true} works on a worker.
FLAKY = {"fail": False}


class Breakdown(RuntimeError):
    """What the flaky agent raises: not retryable, so one failed attempt is one failed call."""


@python_agent("plant.flaky")
class Flaky:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        if FLAKY["fail"] or task.context["input"].get("fail"):
            raise Breakdown("the flaky agent broke down")
        return Outcome(output={"by": "flaky"})


@python_agent("plant.steady")
class Steady:
    def bid(self, task):
        return Bid(confidence=0.5)

    def perform(self, task):
        return Outcome(output={"by": "steady"})


@python_agent("plant.slow")
class Slow:
    def bid(self, task):
        return Bid(confidence=0.6)

    def perform(self, task):
        time.sleep(task.payload.get("seconds", 0.1))
        return Outcome(output={"by": "slow"})


@python_agent("plant.costly")
class Costly:
    def bid(self, task):
        return Bid(confidence=0.6)

    def perform(self, task):
        return Outcome(output={"by": "costly"}, cost=task.context["input"].get("cost", 0.1))


@python_agent("plant.thermometer")
class Thermometer:
    """Reads the temperature the run's input names and reports it as a metric."""

    def bid(self, task):
        return Bid(confidence=0.8)

    def perform(self, task):
        celsius = float(task.context["input"].get("temperature", 20.0))
        return Outcome(output={"temperature": celsius}, metrics={"temperature": celsius})


agent(
    "plant",
    "flaky",
    implementation="plant.flaky",
    capabilities=("work",),
    secret_env="TEST_AGENT_SECRET",  # it calls the API in tests
)
agent("plant", "steady", implementation="plant.steady", capabilities=("work",))
agent("plant", "sputter", implementation="plant.flaky", capabilities=("sputter",))
agent("plant", "slow", implementation="plant.slow", capabilities=("grind",))
agent("plant", "costly", implementation="plant.costly", capabilities=("spend",))
agent("plant", "thermometer", implementation="plant.thermometer", capabilities=("measure",))


@validator("plant.never")
def never(value, context):
    return Verdict(ok=False, score=0.0, feedback="not good enough yet")


blueprint(
    "plant-work",
    kind="main",
    domain="plant",
    phases=[Phase("work", task_type="plant.work", capabilities=("work",))],
    validators=("plant.never",),
    policy=Policy(exits=Exits(max_iterations=4), validation_rounds=10),
    description="Flaky and steady work until max_iterations; the validator is never pleased.",
)
blueprint(
    "plant-heat",
    kind="main",
    domain="plant",
    phases=[Phase("measure", task_type="plant.measure", capabilities=("measure",))],
    policy=Policy(exits=Exits(max_iterations=3)),
    description="One reading of the thermometer.",
)
blueprint(
    "plant-line",
    kind="main",
    domain="plant",
    phases=[
        Phase("grind", task_type="plant.grind", capabilities=("grind",), payload={"seconds": 0.1})
    ],
    validators=("plant.never",),
    policy=Policy(exits=Exits(max_iterations=20, deadline_s=120), validation_rounds=100),
    description="Slow rounds on a real worker, long enough to be paused midway.",
)

breaker(
    "plant-flaky-failures",
    scope="agent:plant/flaky",
    metric="consecutive_failures",
    threshold=2,
    cooldown_s=30,
)
breaker(
    "plant-sputter-errors",
    scope="agent:plant/sputter",
    metric="error_rate",
    threshold=0.5,
    window_s=60,
    min_calls=4,
)
breaker("plant-costly-spend", scope="agent:plant/costly", metric="cost_window", threshold=1.0)
breaker(
    "plant-slow-latency",
    scope="agent:plant/slow",
    metric="latency",
    threshold=250,
    min_calls=3,
)
breaker(
    "plant-heat-temperature",
    scope="blueprint:plant-heat",
    metric="reported_value",
    value_key="temperature",
    threshold=90,
    cooldown_s=30,
)
breaker(
    "plant-line-stop",
    scope="blueprint:plant-line",
    metric="consecutive_failures",
    threshold=1000,
)
breaker(
    "plant-budget",
    scope="domain:plant",
    metric="cost_window",
    threshold=100.0,
    window_s=3600,
)
