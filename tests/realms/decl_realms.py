"""Loops the realms tests run (tests.settings names this module): every realm of a test
declares the same, and the child names say which realm runs what.

fed-main (in a) calls b's fed-sub, which calls c's fed-micro: a stack across three realms.
fed-cycle (in a) calls b's fed-bounce, which would call a again: a cycle, refused.
fed-direct (in a) calls b's fed-micro: one hop.
fed-vote (in a) broadcasts to realms b and c, each an agent of the broadcast standing for a
peer (adapter "realm"): each bids or declines by its own rules; the selected one runs its
fed-micro for the vote, as a frame of a's stack.
fed-human-direct (in a) calls b's fed-human, whose agent asks a human (DESIGN.md H9).
fed-long-direct (in a) calls b's fed-long, which counts until a halt or a cancel."""

from __future__ import annotations

import time

from django.conf import settings

from loops.declare import agent, blueprint, domain, python_agent, remote_agent, validator
from loops.messages import Bid, Escalation, Outcome, Verdict
from loops.specs import Exits, Phase, Policy

domain("fed", "Federation", "Loops that cross realms.")


@python_agent("fed.adder")
class Adder:
    """Adds one to the run's input n, and says which realm it ran in."""

    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        n = task.context.get("input", {}).get("n", 0)
        return Outcome(output={"n": n + 1, "realm": settings.REALM_SLUG}, cost=0.25)


agent("fed", "adder", implementation="fed.adder", capabilities=("add",))


@python_agent("fed.sleeper")
class Sleeper:
    """Takes two seconds, so a test can kill a worker, or take a web process away, mid-call."""

    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        time.sleep(2)
        return Outcome(output={"slept": 2, "realm": settings.REALM_SLUG})


agent("fed", "sleeper", implementation="fed.sleeper", capabilities=("sleep",))

_ONCE = Policy(exits=Exits(quality=("validated",), max_iterations=3))
_ADD = Phase("add", task_type="fed.add", capabilities=("add",))


def _calls(name: str, kind: str, child: str, *, export: bool = False) -> None:
    blueprint(
        name,
        kind=kind,
        domain="fed",
        phases=[Phase("away", call=(child,))],
        children=(child,),
        policy=_ONCE,
        export=export,
    )


blueprint(
    "fed-micro",
    kind="micro",
    domain="fed",
    phases=[_ADD],
    policy=_ONCE,
    export=True,
    input_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    bid_window_ms=500,
)
_calls("fed-sub", "sub", "c:fed-micro", export=True)
_calls("fed-main", "main", "b:fed-sub")
_calls("fed-bounce", "sub", "a:fed-micro", export=True)
_calls("fed-cycle", "main", "b:fed-bounce")
_calls("fed-direct", "main", "b:fed-micro")
blueprint(
    "fed-slow",
    kind="micro",
    domain="fed",
    phases=[Phase("sleep", task_type="fed.sleep", capabilities=("sleep",))],
    policy=_ONCE,
    export=True,
)
_calls("fed-slow-direct", "main", "b:fed-slow")

for _realm in ("b", "c"):
    remote_agent(
        "fed",
        f"realm-{_realm}",
        adapter="realm",
        config={"realm": _realm, "blueprint": "fed-micro", "timeout_s": 30},
        capabilities=("vote",),
    )
blueprint(
    "fed-vote",
    kind="main",
    domain="fed",
    phases=[Phase("vote", task_type="fed.vote", capabilities=("vote",))],
    # A selected realm runs its fed-micro as a frame of this stack.
    children=("b:fed-micro", "c:fed-micro"),
    policy=_ONCE,
    bid_window_ms=3000,
)

# Any A2A agent in a broadcast (adapter "a2a"): the test points it at a realm's /a2a with a
# client peer's token, as it would at any A2A server.
remote_agent(
    "fed",
    "any-a2a",
    adapter="a2a",
    config={
        "url_env": "FED_A2A_URL",
        "token_env": "FED_A2A_TOKEN",
        "skill": "fed-micro",
        "confidence": 0.8,
        "timeout_s": 30,
    },
    capabilities=("ask",),
)
blueprint(
    "fed-ask",
    kind="main",
    domain="fed",
    phases=[Phase("ask", task_type="fed.ask", capabilities=("ask",))],
    policy=_ONCE,
)


# A stack that works until a halt: a's fed-long-main → b's fed-long-sub → c's fed-long, which
# counts for as long as it may (its validator always asks for another round).
@python_agent("fed.counter")
class Counter:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        time.sleep(0.01)
        return Outcome(output={"count": task.iteration})


agent("fed", "tally", implementation="fed.counter", capabilities=("count",))


@validator("fed.again")
def again(value, context):
    return Verdict(ok=False, feedback="count once more")


blueprint(
    "fed-long",
    kind="micro",
    domain="fed",
    phases=[Phase("count", task_type="fed.count", capabilities=("count",))],
    validators=("fed.again",),
    policy=Policy(exits=Exits(max_iterations=1_000_000), validation_rounds=10**6),
    export=True,
)
_calls("fed-long-sub", "sub", "c:fed-long", export=True)
_calls("fed-long-main", "main", "b:fed-long-sub")
_calls("fed-long-direct", "main", "b:fed-long")
blueprint(  # a realm's own counting, which no other realm's halt may touch
    "fed-count",
    kind="main",
    domain="fed",
    phases=[Phase("count", task_type="fed.count", capabilities=("count",))],
    validators=("fed.again",),
    policy=Policy(exits=Exits(max_iterations=1_000_000), validation_rounds=10**6),
)


# A decision a human must take, in work another realm asked for (DESIGN.md H9).
DOSE = {"type": "object", "properties": {"dose_mg": {"type": "number"}}, "required": ["dose_mg"]}


@python_agent("fed.asker")
class Asker:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        return Outcome(
            output={"dose_mg": 5, "realm": settings.REALM_SLUG},
            escalate=Escalation(
                reason="confirm the dose", severity="critical", rationale="over the usual range"
            ),
        )


agent("fed", "asker", implementation="fed.asker", capabilities=("ask-human",))
blueprint(
    "fed-human",
    kind="micro",
    domain="fed",
    phases=[Phase("ask", task_type="fed.ask-human", capabilities=("ask-human",))],
    policy=_ONCE,
    export=True,
)
_calls("fed-human-direct", "main", "b:fed-human")
