"""Loops the tests run, on a real worker too (tests.settings names this module).

A three-level stack: lab-main plans, then calls lab-sub; lab-sub calls lab-micro to square a
number, then summarises. Agents compute real (small) things from their task.
"""

from __future__ import annotations

import time

from loops.declare import (
    Bid,
    Exits,
    Outcome,
    Phase,
    Policy,
    Retry,
    Verdict,
    agent,
    blueprint,
    domain,
    python_agent,
    validator,
)

domain("lab", "Laboratory", "Loops the test suite runs.")


@python_agent("tests.planner")
class Planner:
    def bid(self, task):
        return Bid(confidence=0.8, est_cost=0.01)

    def perform(self, task):
        return Outcome(output={"x": task.context["input"].get("x", 3)}, cost=0.01, tokens=5)


@python_agent("tests.squarer")
class Squarer:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        x = task.context["input"]["x"]
        return Outcome(output=x * x, tokens=3)


@python_agent("tests.summariser")
class Summariser:
    def bid(self, task):
        return Bid(confidence=0.7)

    def perform(self, task):
        square = task.context["phases"]["measure"]["lab-micro"]
        return Outcome(output={"square": square, "summary": f"the square is {square}"}, tokens=7)


@python_agent("tests.slow")
class Slow:
    """Takes a while, so a worker can be killed while it works."""

    def bid(self, task):
        return Bid(confidence=0.6)

    def perform(self, task):
        time.sleep(task.payload.get("seconds", 0.3))
        return Outcome(output={"done": True})


agent("lab", "planner", implementation="tests.planner", capabilities=("plan",))
agent("lab", "squarer", implementation="tests.squarer", capabilities=("arithmetic",))
agent("lab", "summariser", implementation="tests.summariser", capabilities=("writing",))
agent("lab", "slowpoke", implementation="tests.slow", capabilities=("patience",))


@validator("tests.has-summary")
def has_summary(value, context):
    ok = isinstance(value, dict) and "summary" in value
    return Verdict(ok=ok, score=1.0 if ok else 0.0, feedback="" if ok else "no summary")


bounded = Policy(exits=Exits(quality=("validated",), max_iterations=5, deadline_s=120))

blueprint(
    "lab-micro",
    kind="micro",
    domain="lab",
    policy=bounded,
    phases=[Phase("square", task_type="lab.square", capabilities=("arithmetic",))],
    bid_window_ms=500,
    gather_deadline_ms=5000,
)
blueprint(
    "lab-sub",
    kind="sub",
    domain="lab",
    policy=bounded,
    children=("lab-micro",),
    phases=[
        Phase("measure", call=("lab-micro",)),
        Phase("summarise", task_type="lab.summarise", capabilities=("writing",)),
    ],
    validators=("tests.has-summary",),
)
blueprint(
    "lab-main",
    kind="main",
    domain="lab",
    children=("lab-sub",),
    policy=Policy(exits=Exits(quality=("validated",), max_iterations=10, budget=1.0)),
    phases=[
        Phase("plan", task_type="lab.plan", capabilities=("plan",)),
        Phase("delegate", call=("lab-sub",)),
    ],
)
blueprint(
    "lab-slow",
    kind="main",
    domain="lab",
    policy=Policy(
        exits=Exits(quality=("validated",), max_iterations=3), retry=Retry(max_attempts=1)
    ),
    phases=[
        Phase("wait-1", task_type="lab.wait", payload={"seconds": 0.3}, capabilities=("patience",)),
        Phase("wait-2", task_type="lab.wait", payload={"seconds": 0.3}, capabilities=("patience",)),
    ],
)
