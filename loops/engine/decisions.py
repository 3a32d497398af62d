"""A human's decision on an interrupt, applied by the run's next step (CONCEPTS 37, 40).

The decision service (oversight.services.interrupts) leaves it in run.context["decision"]
and sets the run running; this step takes it out under the run's lock and acts on it:

    approve  the proposal becomes the phase's result, as if it had validated
    modify   the human's payload becomes the phase's result (the next phase gets it)
    reject   the comment is fed back, and the phase runs again with it

An interrupt an agent raised between iterations has no result waiting: approve goes on,
modify leaves the payload in context["human"] for the next broadcast, reject feeds back;
a run that was waiting for its children when it was interrupted waits for them again.
"""

from __future__ import annotations

from loops.engine.close import decide
from loops.engine.exits import carry_on
from loops.engine.judge import Judgement
from loops.engine.lease import State
from loops.engine.step import Step
from loops.engine.tx import Tx, step_tx
from loops.engine.writes import write_run
from loops.models import LoopRun


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
