"""Step 3: merge, validate and decide, in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.db import transaction

from console import metrics
from loops import learning, merge, services
from loops.declare import IMPLEMENTATIONS, VALIDATORS, Verdict
from loops.engine.exits import best_so_far, carry_on, finish, mark_closed
from loops.engine.lease import Events, Reason, State, Status, StepAborted, lock
from loops.engine.results import apply_results
from loops.models import Agent, Iteration
from oversight.services import interrupts


@dataclass
class Judgement:
    merged: Any = None
    rationale: str = ""
    ok: bool = False
    score: float | None = None
    feedback: tuple[str, ...] = ()
    error: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)  # validators that sat out


def judge(run, spec, iteration, contributions, results) -> Judgement:
    """Merge the gathered contributions (or the children's results) and validate them."""
    phase = spec.phases[iteration.phase]
    if phase.beam and not run.children.filter(spawned_by=iteration).exists():
        ranked = run.context.get("phases", {}).get(spec.phases[iteration.phase - 1].name) or []
        best = ranked[0]["output"] if ranked else None
        judged = Judgement(merged=best, rationale="a leaf at the depth bound: its best thought")
    elif phase.call:
        keys = (
            list(run.children.filter(spawned_by=iteration).values_list("call_key", flat=True))
            if phase.beam
            else phase.call
        )
        returned = {name: run.context.get("children", {}).get(name, {}) for name in keys}
        failed = [n for n, r in returned.items() if r.get("state") != State.SUCCEEDED]
        if failed:
            return Judgement(error=f"children did not succeed: {', '.join(failed)}")
        judged = Judgement(
            merged={n: r.get("result") for n, r in returned.items()},
            rationale=f"results of {', '.join(phase.call)}",
        )
    else:
        fresh = {r.contribution.pk: r for r in results}
        candidates = [
            merge.Candidate(
                c.agent.name, fresh[c.pk].outcome.output, c.confidence, fresh[c.pk].finished
            )
            if c.pk in fresh
            else merge.Candidate(c.agent.name, c.output, c.confidence, c.finished_at)
            for c in contributions
            if (
                c.pk in fresh
                and fresh[c.pk].outcome is not None
                and fresh[c.pk].finished <= iteration.gather_deadline_at
            )
            or (c.pk not in fresh and c.status == Status.COMPLETED and not c.late)
        ]
        try:
            merged = merge.merge(
                spec.merge,
                candidates,
                min_results=max(spec.quorum, 1),
                threshold=spec.consensus_threshold,
            )
        except merge.MergeError as exc:
            return Judgement(error=f"{exc.code}: {exc.detail}")
        judged = Judgement(merged=merged.value, rationale=merged.rationale)
    last = iteration.phase == len(spec.phases) - 1
    names = (*phase.validators, *(spec.validators if last else ()))
    answered = {r.contribution.pk for r in results if r.outcome is not None}
    makers = {
        c.agent.name for c in contributions if c.pk in answered or c.status == Status.COMPLETED
    }
    verdicts, judged.skipped = [], []
    for name in names:
        checker = name.removeprefix(AGENT_VALIDATOR)
        if name == checker:
            verdicts.append((name, VALIDATORS[name](judged.merged, run.context)))
        elif checker in makers:  # maker ≠ checker (CONCEPTS 63)
            judged.skipped.append(
                {"validator": name, "reason": f"{checker} contributed to this merge"}
            )
        else:
            verdicts.append(
                (name, validator_agent(run, checker).validate(judged.merged, run.context))
            )
    if phase.output_schema is not None:
        verdicts.append(("output_schema", schema_verdict(phase.output_schema, judged.merged)))
    judged.ok = all(v.ok for _, v in verdicts)
    scores = [v.score for _, v in verdicts if v.score is not None]
    judged.score = min(scores) if scores else None
    judged.feedback = tuple(f"{name}: {v.feedback}" for name, v in verdicts if not v.ok)
    return judged


AGENT_VALIDATOR = "agent:"  # a blueprint names a validator agent as "agent:<name>"


def validator_agent(run, name: str):
    """A validator agent of the run's domain: an in-process agent with validate()."""
    agent = Agent.objects.get(domain_id=run.domain_id, name=name)
    return IMPLEMENTATIONS[agent.config["implementation"]]()


def schema_verdict(schema: dict[str, Any], value: Any) -> Verdict:
    problems = [
        f"{'/'.join(map(str, e.absolute_path)) or 'the result'}: {e.message}"
        for e in jsonschema.Draft202012Validator(schema).iter_errors(value)
    ]
    return Verdict(ok=not problems, feedback="; ".join(problems))


def judge_and_close(run, spec, iteration, contributions, results) -> None:
    """Record the calls, merge, validate and decide, in one transaction."""
    judged = judge(run, spec, iteration, contributions, results)
    with transaction.atomic():
        run, may = lock(run.pk)
        events: Events = []
        apply_results(run, results, held=not may, events=events)
        if may:
            close(run, spec, iteration, judged, contributions, results, events)
        services.events_write(run.root_id, events)
    if not may:
        # Outside the transaction, so the held results commit; nothing is decided while
        # the run is stopped (CONCEPTS 42).
        raise StepAborted


def close(run, spec, iteration, judged: Judgement, contributions, results, events) -> None:
    """Inside the transaction holding the run: record the judgement and decide."""
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
    metrics.iteration_closed(spec.domain, iteration)
    # Outcome recording (L3, CONCEPTS 53, 64): what each agent's part earned it; the
    # posteriors take it in through learning.stats_fold.
    earned = {c.agent_id: learning.outcome_of(c, outcome) for c in contributions}
    events.append(
        (
            run.pk,
            "iteration.merged" if not judged.error else "merge.failed",
            {"iteration": iteration.number, "rationale": iteration.rationale},
        )
    )
    events.append(
        (
            run.pk,
            "validation.passed" if ok else "validation.failed",
            {
                "iteration": iteration.number,
                "score": judged.score,
                "feedback": iteration.feedback,
                "layer": "validation",
            },
        )
    )
    events.append(
        (
            run.pk,
            "outcome.recorded",
            {"iteration": iteration.number, "agents": earned, "layer": "meta"},
        )
    )
    if ok:  # who won this phase, for a later phase's audience (CONCEPTS 28)
        winners = [c.agent_id for c in contributions if c.status != Status.FAILED]
        run.context.setdefault("winners", {})[iteration.phase_name] = winners
    if not ok and any(c.error_class == "budget" for c in contributions):
        why = "the budget left cannot pay for the calls this iteration needed"
        finish(run, State.EXHAUSTED, Reason.BUDGET, why, events, best_so_far(run))
    elif asked := escalation(spec, iteration, judged, contributions, results, ok):
        interrupts.interrupt_raise(run=run, iteration=iteration, events=events, **asked)
    else:
        decide(run, spec, iteration, judged, ok, events)


def escalation(spec, iteration, judged: Judgement, contributions, results, ok: bool) -> dict:
    """Whether a human must decide on this result before it is used (CONCEPTS 37): an
    agent asked in its result, or the policy's confidence floor or value limits say so.
    Returns interrupt_raise's arguments, or {} when the loop may go on by itself."""
    if judged.error:
        return {}
    common = {
        "policy": spec.policy.escalation,
        "proposal": judged.merged,
        "proposal_schema": spec.phases[iteration.phase].output_schema,
    }
    for r in results:
        if r.outcome is not None and (asked := r.outcome.escalate) is not None:
            return {
                **common,
                "source": "agent",
                "reason": asked.reason,
                "proposal": judged.merged if asked.proposal is None else asked.proposal,
                "severity": asked.severity,
                "rationale": asked.rationale or r.outcome.rationale,
                "agent": r.contribution.agent,
            }
    if not ok:
        return {}
    policy = spec.policy.escalation
    confidences = [c.confidence for c in contributions if c.status == Status.COMPLETED]
    floor = policy.confidence_below
    if floor is not None and confidences and max(confidences) < floor:
        reason = f"confidence {max(confidences):.2f} is under the floor {floor:g}"
        return {**common, "source": "policy", "reason": reason}
    merged = judged.merged if isinstance(judged.merged, dict) else {}
    for key, limit in policy.over.items():
        value = merged.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > limit:
            reason = f"{key} = {value:g} is over the limit {limit:g}"
            return {**common, "source": "policy", "reason": reason, "severity": "critical"}
    return {}


def decide(run, spec, iteration, judged: Judgement, ok: bool, events: Events) -> None:
    """After a closed iteration: a quality exit, the next phase, another round, or the end."""
    phase = spec.phases[iteration.phase]
    context = run.context
    context.setdefault("phases", {})[phase.name] = judged.merged
    context["feedback"] = [] if ok else iteration.feedback
    context["rounds"] = 0 if ok else context.get("rounds", 0) + 1  # failed rounds this phase
    if judged.score is not None:  # the score history and the best so far (CONCEPTS 54, 68)
        context.setdefault("scores", []).append(judged.score)
        if judged.score >= context.get("best", {}).get("score", float("-inf")):
            context["best"] = {"score": judged.score, "result": judged.merged}
    if phase.call and judged.error:
        return finish(run, State.FAILED, Reason.CHILD_FAILED, judged.error, events)
    exits = spec.policy.exits
    if ok and "score_target" in exits.quality and (judged.score or 0) >= exits.score_target:
        why = f"score {judged.score}"
        return finish(run, State.SUCCEEDED, Reason.SCORE_TARGET, why, events, judged.merged)
    if ok and iteration.phase + 1 < len(spec.phases):
        run.phase = iteration.phase + 1
        events.append((run.pk, "phase.advanced", {"phase": spec.phases[run.phase].name}))
    elif ok and "validated" in exits.quality:
        why = "the last phase validated"
        return finish(run, State.SUCCEEDED, Reason.QUALITY, why, events, judged.merged)
    elif not ok and no_progress(context.get("scores", []), exits.no_progress):
        epsilon, k = exits.no_progress
        why = f"the best score improved by less than {epsilon} in {k} iterations"
        best = context["best"]["result"]
        return finish(run, State.EXHAUSTED, Reason.NO_PROGRESS, why, events, best)
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
                events=events,
            )
            return None
        why = "; ".join(iteration.feedback) or "validation failed every round"
        return finish(run, State.FAILED, Reason.VALIDATION_EXHAUSTED, why, events)
    return carry_on(run, spec, events)


def no_progress(scores: list[float], rule: tuple[float, int] | None) -> bool:
    """Whether the best score rose by less than epsilon in each of the last k iterations."""
    if rule is None or len(scores) <= rule[1]:
        return False
    epsilon, k = rule
    best = [max(scores[: i + 1]) for i in range(len(scores))]
    return all(best[i] - best[i - 1] < epsilon for i in range(len(best) - k, len(best)))
