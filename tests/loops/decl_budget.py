"""Loops whose budgets ask (issue 18; CONCEPTS 37, 69): the till domain (tests.settings
names this module, so the worker runs them too).

The meter bids 0.4 and spends 0.4 a call; its result validates in the third round of a
phase, so a phase costs 1.2: over a budget of 1.0, the third call cannot be afforded.

    till-main          budget 1.5; calls till-count, whose budget of 1.0 it sets aside,
                       so 0.5 is left to extend it by
      till-count         on_budget="ask": asks to extend by min(0.4 x 3 iterations, 0.5)
    till-solo          a main loop that asks: no parent bounds the extension
    till-solo-exhaust  the same, on_budget="exhaust" (the default): exhausted, as before
    till-overspend     asks when its cost reaches its budget (its calls cost more than bid)
"""

from __future__ import annotations

from loops.declare import agent, blueprint, domain, python_agent, validator
from loops.messages import Bid, Outcome, Verdict
from loops.specs import Exits, Phase, Policy

domain("till", "Till", "Loops whose budgets ask before they stop.")


@python_agent("till.meter")
class Meter:
    def bid(self, task):
        return Bid(confidence=0.9, est_cost=task.payload.get("bid", 0.4))

    def perform(self, task):
        spent = task.payload.get("spend", 0.4)
        return Outcome(output={"round": task.context.get("rounds", 0)}, cost=spent)


@validator("till.third-round")
def third_round(value, context):
    ok = context.get("rounds", 0) >= 2
    return Verdict(ok=ok, feedback="" if ok else "not yet: once more")


agent("till", "meter", implementation="till.meter", capabilities=("meter",))


def _metered(name, kind, *, ask=True, budget=1.0, **payload):
    return blueprint(
        name,
        kind=kind,
        domain="till",
        policy=Policy(
            exits=Exits(quality=("validated",), max_iterations=6, budget=budget),
            validation_rounds=5,
            on_budget="ask" if ask else "exhaust",
        ),
        phases=[Phase("meter", task_type="till.meter", capabilities=("meter",), payload=payload)],
        validators=("till.third-round",),
        selection="best",
        bid_window_ms=500,
        gather_deadline_ms=5000,
    )


_metered("till-count", "sub")
_metered("till-solo", "main")
_metered("till-solo-exhaust", "main", ask=False)
_metered("till-overspend", "main", bid=0.3, spend=0.5)
blueprint(
    "till-main",
    kind="main",
    domain="till",
    policy=Policy(exits=Exits(quality=("validated",), max_iterations=3, budget=1.5)),
    phases=[Phase("count", call=("till-count",))],
    children=("till-count",),
)
