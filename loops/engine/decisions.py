"""A human's decision on an interrupt, applied by the run's next step (CONCEPTS 37, 40).

The decision service (oversight.services.interrupts) leaves it in run.context["decision"]
and sets the run running; this step takes it out under the run's lock and acts on it:

    approve  the proposal becomes the phase's result, as if it had validated
    modify   the human's payload becomes the phase's result (the next phase gets it)
    reject   the comment is fed back, and the phase runs again with it

An interrupt an agent raised between iterations has no result waiting: approve goes on,
modify leaves the payload in context["human"] for the next broadcast, reject feeds back;
a run that was waiting for its children when it was interrupted waits for them again.

A budget question (loops.engine.budget) is answered apart: approve and modify extend the
budget and the run retries what it could not afford; reject ends it exhausted.
"""

from __future__ import annotations

from typing import Any

from loops import services
from loops.engine import budget
from loops.engine.close import decide
from loops.engine.exits import best_so_far, carry_on, finish
from loops.engine.judge import Judgement
from loops.engine.lease import Reason, State
from loops.engine.step import Step
from loops.engine.tx import Tx, step_tx
from loops.engine.writes import write_run
from loops.models import LoopRun
from oversight.audit import audit_record


def apply_decision(step: Step) -> bool:
    """True if a decision was applied (the step ends here; what comes next is sent or
    kept); False if another step applied it first."""
    assert step.spec is not None
    with step_tx(step.run.pk) as tx:
        run = step.run = tx.require()
        decision = run.context.pop("decision", None)
        if decision is None:
            return False
        kind, by = decision["decision"], decision["by"]
        asked = run.context.pop(budget.CONTEXT_KEY, None)
        if asked is not None and asked.get("interrupt") == decision["interrupt"]:
            tx.trace.add(run.pk, "decision.applied", {"decision": kind, "by": by})
            budget_answer(step, tx, decision, asked)
            write_run(run, tx.trace)
            return True
        run.context["human"] = {
            "decision": kind,
            "payload": decision["payload"],
            "comment": decision["comment"],
            "by": by,
        }
        tx.trace.add(run.pk, "decision.applied", {"decision": kind, "by": by})
        iteration = None
        if decision["iteration"] is not None:
            iteration = run.iterations.filter(number=decision["iteration"]).first()
        if kind == "reject":
            run.context["feedback"] = [f"rejected by {by}: {decision['comment']}"]
            run.context["rounds"] = 0  # a human's answer starts the rounds again
            go_on(step, tx)
        elif iteration is not None and iteration.phase == run.phase:
            value = decision["payload"] if kind == "modify" else decision["proposal"]
            decide(
                step,
                tx,
                iteration,
                Judgement(merged=value, rationale=f"{kind} by {by}", ok=True),
                True,
            )
        else:
            go_on(step, tx)
        write_run(run, tx.trace)
    return True


def go_on(step: Step, tx: Tx) -> None:
    """The next step; or, for a run an agent interrupted while it waited for its children,
    the wait again while any of them still runs (the last one's return wakes it). Without
    this, the next step would judge the children's results before they exist."""
    run = tx.run
    live = list(run.children.exclude(state__in=LoopRun.TERMINAL).values_list("pk", flat=True))
    if not live:
        carry_on(step, run, tx.trace)
        return
    run.move_to(State.WAITING)
    run.lease_worker, run.lease_expires_at = "", None
    tx.trace.add(run.pk, "run.waiting", {"children": live})


def budget_answer(step: Step, tx: Tx, decision: dict[str, Any], asked: dict[str, Any]) -> None:
    """The answer to a budget question (CONCEPTS 37, 69). Reject: exhausted/budget, as
    without asking. Approve (the proposed amount) or modify (the person's): the budget is
    extended, set aside from the parent's remainder under its lock, and the run goes on,
    retrying what it could not afford; if the parent's remainder no longer has room (it
    shrank since the question), exhausted/budget saying so. Either outcome is audited, as
    the system's act on the person's decision."""
    run, trace = tx.run, tx.trace
    kind, by = decision["decision"], decision["by"]
    if kind == "reject":
        why = f"{asked['detail']}; {by} did not extend the budget: {decision['comment']}"
        finish(run, trace, State.EXHAUSTED, Reason.BUDGET, why, result=best_so_far(run))
        return
    chosen = decision["payload"] if kind == "modify" else decision["proposal"]
    amount = chosen.get("extend_by") if isinstance(chosen, dict) else None
    before = run.budget
    if isinstance(amount, int | float) and not isinstance(amount, bool):
        refusal = services.cost_extend(run, float(amount))
    else:
        refusal = f"the decision names no amount to extend by ({chosen!r})"
    what = {"interrupt": decision["interrupt"], "extend_by": amount, "decided_by": by}
    audit_record(
        actor=None,
        verb="run.budget_refused" if refusal else "run.budget_extended",
        target=run,
        note=refusal or f"extended by {amount:g}, as {by} decided",
        before={"budget": before, "cost": run.cost},
        after={"budget": run.budget, "state": State.EXHAUSTED if refusal else run.state},
        data={**what, "parent": run.parent_id},
    )
    if refusal:
        trace.add(run.pk, "budget.refused", {**what, "reason": refusal})
        why = f"{asked['detail']}; {by} decided to extend the budget by {amount}, but {refusal}"
        finish(run, trace, State.EXHAUSTED, Reason.BUDGET, why, result=best_so_far(run))
        return
    trace.add(run.pk, "budget.extended", {**what, "budget": run.budget})
    go_on(step, tx)
