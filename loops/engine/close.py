"""Step 3, decided: in one transaction, the calls' results, the judgement recorded, and what
comes next — a quality exit, the next phase, another round with the validators' feedback, a
human's decision (an interrupt), or an end."""

from __future__ import annotations

from common.metrics import iteration_closed_on_commit
from loops import learning
from loops.engine import budget
from loops.engine.exits import carry_on, exhaust, finish, mark_closed
from loops.engine.judge import Judgement, escalation, judge
from loops.engine.lease import Reason, State, Status, StepAborted
from loops.engine.results import Result, apply_results
from loops.engine.step import Step
from loops.engine.tx import Tx, step_tx
from loops.engine.writes import write_close
from loops.models import Contribution, Iteration
from oversight.services import interrupts


def judge_and_close(
    step: Step, iteration: Iteration, contributions: list[Contribution], results: list[Result]
) -> None:
    """Merge and validate outside the transaction, then record and decide inside it. If the
    run stopped meanwhile, the results are written held and nothing is decided (CONCEPTS
    42): the step ends there."""
    assert step.spec is not None
    judged = judge(step.run, step.spec, iteration, contributions, results)
    agents = [r.contribution.agent_id for r in results]
    with step_tx(step.run.pk, agents=agents) as tx:
        step.run = tx.run
        apply_results(tx, results, held=not tx.may)
        if tx.may:
            close(step, tx, iteration, judged, contributions, results)
        calls = [r.contribution for r in results]
        write_close(tx.run, tx.trace, results=calls, iteration=iteration if tx.may else None)
    if not tx.may:
        raise StepAborted
    step.closed = iteration.status == Iteration.Status.CLOSED


def close(
    step: Step,
    tx: Tx,
    iteration: Iteration,
    judged: Judgement,
    contributions: list[Contribution],
    results: list[Result],
) -> None:
    """Record the judgement on the iteration, what each agent's part earned it, and decide."""
    run, spec = tx.run, step.spec
    assert spec is not None
    ok = judged.ok and not judged.error
    iteration.merged, iteration.rationale = judged.merged, judged.rationale
    iteration.feedback = list(judged.feedback) or ([judged.error] if judged.error else [])
    iteration.validation = {
        "ok": ok,
        "score": judged.score,
        "feedback": list(judged.feedback),
        "error": judged.error,
        "skipped": judged.skipped,
    }
    outcome = (
        Iteration.Outcome.VALIDATED
        if ok
        else Iteration.Outcome.MERGE_FAILED
        if judged.error
        else Iteration.Outcome.REJECTED
    )
    mark_closed(iteration, outcome, judged.rationale or judged.error)
    assert iteration.closed_at is not None
    iteration_closed_on_commit(
        domain=spec.domain,
        outcome=outcome,
        started=iteration.started_at,
        closed=iteration.closed_at,
    )
    # Outcome recording (L3, CONCEPTS 53, 64): what each agent's part earned it; the
    # posteriors take it in through learning.stats_fold.
    earned = {c.agent_id: learning.outcome_of(c, outcome) for c in contributions}
    number, trace = iteration.number, tx.trace
    merged = "iteration.merged" if not judged.error else "merge.failed"
    trace.add(run.pk, merged, {"iteration": number, "rationale": iteration.rationale})
    validation = {
        "iteration": number,
        "score": judged.score,
        "feedback": iteration.feedback,
        "layer": "validation",
    }
    trace.add(run.pk, "validation.passed" if ok else "validation.failed", validation)
    trace.add(run.pk, "outcome.recorded", {"iteration": number, "agents": earned, "layer": "meta"})
    if ok:  # who won this phase, for a later phase's audience (CONCEPTS 28)
        winners = [c.agent_id for c in contributions if c.status != Status.FAILED]
        run.context.setdefault("winners", {})[iteration.phase_name] = winners
    if not ok and any(c.error_class == "budget" for c in contributions):
        why = "the budget left cannot pay for the calls this iteration needed"
        wanted = budget.refused_estimate(iteration, contributions)
        exhaust(step, run, trace, Reason.BUDGET, why, iteration=iteration, wanted=wanted)
    elif asked := escalation(spec, iteration, judged, contributions, results, ok):
        interrupts.interrupt_raise(run=run, iteration=iteration, trace=trace, **asked)
    else:
        decide(step, tx, iteration, judged, ok)


def decide(step: Step, tx: Tx, iteration: Iteration, judged: Judgement, ok: bool) -> None:
    """After a closed iteration: a quality exit, the next phase, another round, or the end."""
    run, spec, trace = tx.run, step.spec, tx.trace
    assert spec is not None
    phase = spec.phases[iteration.phase]
    context = run.context
    context.setdefault("phases", {})[phase.name] = judged.merged
    context["feedback"] = [] if ok else iteration.feedback
    context["rounds"] = 0 if ok else context.get("rounds", 0) + 1  # failed rounds this phase
    if judged.score is not None:  # the score history and the best so far (CONCEPTS 54, 68)
        context.setdefault("scores", []).append(judged.score)
        if judged.score >= context.get("best", {}).get("score", float("-inf")):
            context["best"] = {"score": judged.score, "result": judged.merged}
    exits = spec.policy.exits
    if phase.call and judged.error:
        finish(run, trace, State.FAILED, Reason.CHILD_FAILED, judged.error)
    elif (
        ok
        and "score_target" in exits.quality
        and exits.score_target is not None  # a declaration naming score_target sets one
        and (judged.score or 0) >= exits.score_target
    ):
        why = f"score {judged.score}"
        finish(run, trace, State.SUCCEEDED, Reason.SCORE_TARGET, why, result=judged.merged)
    elif ok and iteration.phase + 1 < len(spec.phases):
        run.phase = iteration.phase + 1
        trace.add(run.pk, "phase.advanced", {"phase": spec.phases[run.phase].name})
        carry_on(step, run, trace)
    elif ok and "validated" in exits.quality:
        why = "the last phase validated"
        finish(run, trace, State.SUCCEEDED, Reason.QUALITY, why, result=judged.merged)
    elif not ok and no_progress(context.get("scores", []), exits.no_progress):
        epsilon, k = exits.no_progress  # type: ignore[misc]
        why = f"the best score improved by less than {epsilon} in {k} iterations"
        best = context["best"]["result"]
        finish(run, trace, State.EXHAUSTED, Reason.NO_PROGRESS, why, result=best)
    elif not ok and context["rounds"] >= spec.policy.validation_rounds:
        if spec.policy.on_validation_exhausted == "interrupt":
            rounds = context["rounds"]
            interrupts.interrupt_raise(
                run=run,
                iteration=iteration,
                source="policy",
                reason=f"validation failed {rounds} rounds: {'; '.join(iteration.feedback)}"[:1000],
                policy=spec.policy.escalation,
                proposal=judged.merged,
                proposal_schema=phase.output_schema,
                trace=trace,
            )
        else:
            why = "; ".join(iteration.feedback) or "validation failed every round"
            finish(run, trace, State.FAILED, Reason.VALIDATION_EXHAUSTED, why)
    else:
        carry_on(step, run, trace)


def no_progress(scores: list[float], rule: tuple[float, int] | None) -> bool:
    """Whether the best score rose by less than epsilon in each of the last k iterations."""
    if rule is None or len(scores) <= rule[1]:
        return False
    epsilon, k = rule
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    return all(best[i] - best[i - 1] < epsilon for i in range(len(best) - k, len(best)))
