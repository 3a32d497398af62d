"""Step 3, judged: merge the gathered contributions (or the children's results) and validate
them, and say whether a human must decide before the result is used. No writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema

from loops import merge
from loops.declare import IMPLEMENTATIONS, VALIDATORS
from loops.engine.lease import State, Status
from loops.messages import FRAME, Verdict
from loops.models import Agent


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
        candidates = [s for c in candidates if (s := _stand_in(run, c)) is not None]
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
                "limit": asked.limit,
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
    for key, over in policy.over.items():
        if crossed := limit_crossed(merged, key, over):
            return {
                **common,
                "source": "policy",
                "reason": _limit_reason(crossed),
                "severity": "critical",
                "limit": crossed,
            }
    return {}


def _number(value: Any) -> float | None:
    """The value if it is a number (a bool is not), else None."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def limit_crossed(merged: dict[str, Any], key: str, over: float | str) -> dict[str, Any]:
    """What the result crossed, as the interrupt keeps it ({"field", "value", "limit"}, and
    "limit_field" when the limit is another field of the result), or {} when it did not.
    A limit field that is missing or not a number crosses nothing: the output schema, not
    this rule, says what a result must hold."""
    value = _number(merged.get(key))
    limit = _number(merged.get(over) if isinstance(over, str) else over)
    if value is None or limit is None or value <= limit:
        return {}
    crossed = {"field": key, "value": value, "limit": limit}
    return crossed | ({"limit_field": over} if isinstance(over, str) else {})


def _limit_reason(crossed: dict[str, Any]) -> str:
    """The interrupt's reason, in the words it has always had for a number limit."""
    key, value, limit = crossed["field"], crossed["value"], crossed["limit"]
    if "limit_field" in crossed:
        return f"{key} = {value:g} is over {crossed['limit_field']} = {limit:g}"
    return f"{key} = {value:g} is over the limit {limit:g}"


def _stand_in(run, candidate: merge.Candidate) -> merge.Candidate | None:
    """A contribution that stands for the frame it spawned (a peer realm's, loops.agents.realm)
    counts with that frame's result, and not at all if the frame did not succeed."""
    output = candidate.output
    if not (isinstance(output, dict) and set(output) == {FRAME}):
        return candidate
    child = run.context.get("children", {}).get(output[FRAME]) or {}
    if child.get("state") != State.SUCCEEDED:
        return None
    return merge.Candidate(
        candidate.agent, child.get("result"), candidate.confidence, candidate.received_at
    )
