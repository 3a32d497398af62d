"""Loops the halt tests run: the depot domain (tests.settings names this module).

depot-loop counts for as long as it is allowed to (its validator always asks for another
round), so a halt always finds it working; depot-stack waits on a depot-loop child.
"""

from __future__ import annotations

import threading
import time

from loops.declare import agent, blueprint, domain, python_agent, validator
from loops.messages import Bid, Outcome, Verdict
from loops.specs import Exits, Phase, Policy

domain("depot", "Depot", "Loops that keep working until a halt.")


@python_agent("depot.counter")
class Counter:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        time.sleep(0.002)  # a call takes a moment, so a halt can find one in flight
        return Outcome(output={"count": len(task.feedback) + task.iteration})


agent("depot", "counter", implementation="depot.counter", capabilities=("count",))


@validator("depot.again")
def again(value, context):
    return Verdict(ok=False, feedback="count once more")


_COUNT = Phase("count", task_type="depot.count", capabilities=("count",))
# The bound is far beyond any test's length: the engine does 100-300 iterations a second,
# and a forever-run that ended mid-test (400 used to be enough) would fail the fault tests'
# "keeps iterating" and race the tests' clean-up cancels.
_FOREVER = Policy(exits=Exits(max_iterations=1_000_000), validation_rounds=10**6)

blueprint(
    "depot-loop",
    kind="main",
    domain="depot",
    phases=[_COUNT],
    validators=("depot.again",),
    policy=_FOREVER,
)
blueprint(
    "depot-child",
    kind="micro",
    domain="depot",
    phases=[_COUNT],
    validators=("depot.again",),
    policy=_FOREVER,
)
blueprint(
    "depot-stack",
    kind="main",
    domain="depot",
    phases=[Phase("delegate", call=("depot-child",))],
    children=("depot-child",),
    policy=Policy(exits=Exits(max_iterations=3)),
)


# depot-held's agent works until the test opens GATE, so a halt can land mid-call.
CALLING, GATE = threading.Event(), threading.Event()
GATE.set()


@python_agent("depot.holder")
class Holder:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        CALLING.set()
        GATE.wait(10)
        return Outcome(output={"held": "result"})


agent("depot", "holder", implementation="depot.holder", capabilities=("hold",))
blueprint(
    "depot-held",
    kind="main",
    domain="depot",
    phases=[Phase("hold", task_type="depot.hold", capabilities=("hold",))],
    policy=Policy(exits=Exits(max_iterations=3)),
)
