"""Budgets that ask (issue 18; CONCEPTS 37, 69; DESIGN.md H2). Where a run whose policy
says on_budget="ask" would end exhausted for its budget (a call it cannot afford, or its
cost reaching its budget), a person is asked first whether to extend it, and by how much.

    the question    an interrupt (source "policy") whose proposal is {"extend_by": X}, with
                    a schema (more than 0, at most the parent's remainder when asked) the
                    decision page builds its form from; its `limit` holds the figures
                    (kind "budget"): the cost so far, the budget, the projection and the
                    parent's remainder, and its reason says them in words
    the projection  per iteration, the larger of the estimates of the calls the budget
                    could not pay for and the mean cost of an iteration so far; times the
                    iterations the policy still allows (the next one, without
                    max_iterations). X is the projection, capped at the parent's remainder
    the remainder   the parent's budget less its cost and reservations (this run's budget
                    among them). A main loop, or a child of a parent without a budget, has
                    none to draw from: its remainder is unbounded (None), and X is the
                    projection; the extension is the person's decision alone
    the answer      applied by the run's next step (loops.engine.decisions): approve
                    extends by X, modify by the person's amount (checked against the
                    parent's remainder when decided: oversight.services.interrupt_rules),
                    reject ends the run exhausted/budget as without asking. The extension
                    is set aside from the parent under its row lock (loops.services
                    .cost_extend): if it no longer fits, the run ends exhausted/budget,
                    saying why, and the refusal is audited like the extension

The question keeps the policy's escalation deadline and default action. It is not asked,
and the run ends exhausted as before, when the policy allows no more iterations or when
the parent has nothing left to give.
"""

from __future__ import annotations

from typing import Any

from loops.models import Bid, Contribution, Iteration, LoopRun
from loops.services import cost_parent_room
from loops.services.cost import EPSILON
from loops.specs import BlueprintSpec
from loops.trace import Trace
from oversight.services import interrupts

KIND = "budget"  # Interrupt.limit["kind"] of a budget question (oversight.presenting)
CONTEXT_KEY = "budget_ask"  # run.context: the open question, until its answer is applied


def refused_estimate(iteration: Iteration, contributions: list[Contribution]) -> float:
    """What the calls refused for the budget were estimated to cost (their winning bids':
    a refused call records no estimate of its own)."""
    refused = [c.agent_id for c in contributions if c.error_class == "budget"]
    if not refused:
        return 0.0
    bids = Bid.objects.filter(iteration_id=iteration.pk, agent_id__in=refused, selected=True)
    return float(sum(bids.values_list("est_cost", flat=True)))


def figures(run: LoopRun, spec: BlueprintSpec, wanted: float) -> dict[str, Any]:
    """The facts a person needs to answer, and the extension proposed (see the module)."""
    done = run.iteration
    # Rounded past any cost's precision: 0.001 x 11 is 0.011, not 0.010999999999999999.
    per_iteration = round(max(wanted, run.cost / done if done else 0.0), 9)
    bound = spec.policy.exits.max_iterations
    iterations_left = bound - done if bound is not None else 1
    projected = round(per_iteration * max(iterations_left, 0), 9)
    parent_left = cost_parent_room(run)
    extend_by = projected if parent_left is None else min(projected, parent_left)
    return {
        "kind": KIND,
        "cost": run.cost,
        "budget": run.budget,
        "per_iteration": per_iteration,
        "iterations_left": iterations_left,
        "projected": projected,
        "parent": run.parent_id,
        "parent_left": parent_left,
        "extend_by": extend_by,
    }


def ask(
    run: LoopRun,
    spec: BlueprintSpec,
    trace: Trace,
    detail: str,
    *,
    iteration: Iteration | None = None,
    wanted: float = 0.0,
) -> str:
    """In the step's transaction, on the locked run: raise the budget question instead of
    the exhausted exit. Returns "" when asked; else why there is nothing to ask, for the
    exhausted exit's detail."""
    if run.budget is None:
        return "it has no budget to extend"  # no budget exit without one: not reached
    facts = figures(run, spec, wanted)
    if facts["iterations_left"] <= 0:
        return "the policy allows no more iterations to extend it for"
    if facts["parent_left"] is not None and facts["parent_left"] <= EPSILON:
        return f"parent run {run.parent_id} has nothing left to extend it by"
    if facts["extend_by"] <= EPSILON:
        return "nothing it spent so far projects a cost to extend it by"
    extend_by = facts["extend_by"]
    amount: dict[str, Any] = {
        "type": "number",
        "exclusiveMinimum": 0,
        "title": "Extend the budget by",
        "description": "Added to the run's budget, set aside from what its parent has left.",
    }
    if facts["parent_left"] is not None:
        amount["maximum"] = facts["parent_left"]
    run.context[CONTEXT_KEY] = {**facts, "detail": detail}
    interrupt = interrupts.interrupt_raise(
        run=run,
        trace=trace,
        source="policy",
        reason=question(facts),
        policy=spec.policy.escalation,
        proposal={"extend_by": extend_by},
        proposal_schema={
            "type": "object",
            "required": ["extend_by"],
            "additionalProperties": False,
            "properties": {"extend_by": amount},
        },
        limit=facts,
        iteration=iteration,
    )
    # Which question the answer is for; the step's write saves it with the run.
    run.context[CONTEXT_KEY]["interrupt"] = interrupt.pk
    return ""


def question(facts: dict[str, Any]) -> str:
    """The reason, in words: the question, then the figures behind it."""
    n = facts["iterations_left"]
    parent = (
        f"parent run {facts['parent']} has {facts['parent_left']:g} left."
        if facts["parent_left"] is not None
        else "no parent's remainder bounds it (a main loop, or a parent without a budget)."
    )
    upcoming = "the next iteration is" if n == 1 else f"the next {n} iterations allowed are"
    return (
        f"Budget nearly spent: extend by {facts['extend_by']:g}? "
        f"Cost so far {facts['cost']:g} of a budget of {facts['budget']:g}; "
        f"{upcoming} projected at {facts['projected']:g} ({facts['per_iteration']:g} each); "
        f"{parent}"
    )
