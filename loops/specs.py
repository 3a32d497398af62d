"""What a declaration holds: a blueprint's phases and policy (exits, retries, escalation),
and the specs of blueprints, domains, agents and breakers that loops.declare registers.

Frozen values; loops.declare checks them when they are declared.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Phase:
    """A step of a blueprint: broadcast a task to agents, or call child loops."""

    name: str
    task_type: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    capabilities: tuple[str, ...] = ()
    call: tuple[str, ...] = ()  # child blueprints called (in parallel) instead of a broadcast
    # Tree of Thoughts (CONCEPTS 62): call the one child once for each of the `beam` best
    # entries of the previous phase's ranked result; below the depth bound only.
    beam: int = 0
    validators: tuple[str, ...] = ()  # judge this phase's result (the blueprint's judge the last)
    # Broadcast only to the agents selected in this earlier phase (CONCEPTS 28, 29).
    audience_from: str = ""
    # A JSON Schema the merged result must match; a mismatch is validation feedback (CONCEPTS 30).
    output_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Retry:
    max_attempts: int = 3
    base_ms: int = 200
    cap_ms: int = 5000
    jitter: bool = True


@dataclass(frozen=True)
class Exits:
    quality: tuple[str, ...] = ("validated",)  # "validated" and/or "score_target"
    score_target: float | None = None
    max_iterations: int | None = None
    deadline_s: float | None = None
    budget: float | None = None
    # (epsilon, k): exhausted when the best score improved by less than epsilon in each of
    # the last k iterations (CONCEPTS 68).
    no_progress: tuple[float, int] | None = None


# Who a ladder's rung tells (issue 18): the first tier, the admins, or the members of a named
# Django group written "group:<name>" (e.g. "group:on-call"). Superusers always hear.
LADDER_AUDIENCES = ("operators", "admins")
GROUP_PREFIX = "group:"


@dataclass(frozen=True)
class Rung:
    """A step of an escalation ladder (issue 18): after_s seconds after the interrupt is
    raised, remind its audience again, or escalate it to the next tier. An escalation only
    widens who is told; who may decide stays the same (anyone with the decide permission).
    The interrupt's deadline and default (Escalate) are the ladder's last step."""

    after_s: float
    action: Literal["remind", "escalate"] = "remind"
    to: str = "operators"  # one of LADDER_AUDIENCES, or "group:<name>"


def Remind(after_s: float, to: str = "operators") -> Rung:
    return Rung(after_s=after_s, action="remind", to=to)


def EscalateTo(after_s: float, to: str = "admins") -> Rung:
    return Rung(after_s=after_s, action="escalate", to=to)


@dataclass(frozen=True)
class Escalate:
    """When a loop stops for a human, and what happens if nobody answers (CONCEPTS 37, 40).

    A merged result whose best confidence is under confidence_below, or with a number over
    its limit in over, is interrupted before it is used. A limit is a number
    ({"dose_mg": 1000}) or the name of another field of the same result, for limits that
    depend on the case ({"dose_mg": "max_dose_mg"}: the patient's and drug's maximum).

    ladder (issue 18): the steps before the deadline, e.g.
    (Remind(120, to="group:on-call"), EscalateTo(300, to="admins")); times count from the
    raise, increase, and come before deadline_s, at which default_action applies.
    """

    confidence_below: float | None = None
    over: dict[str, float | str] = field(default_factory=dict)
    deadline_s: float = 3600.0
    default_action: Literal["approve", "reject"] = "reject"
    # What the loop does instead when a person rejects, in words shown beside the reject
    # button (oversight.presenting.choices), e.g. "the doser then proposes no more than the
    # maximum". "" : the console says only that the step runs again with the comment.
    on_reject: str = ""
    ladder: tuple[Rung, ...] = ()
    # Decisions that need more than one person (issue 18, CONCEPTS 39, 40): the proposal goes
    # ahead only once `approvals` different people approve it; any one reject ends it, and a
    # modify restarts the count on the modified proposal (oversight.services.quorum).
    # quorum_over says when (empty: every interrupt of this policy): {field: limit}, a limit
    # as in `over`, or (limit, factor): {"dose_mg": ("max_dose_mg", 2.0)} is a dose over
    # twice the maximum. approvers_from, when set, asks each approval of a different one of
    # these groups (console roles or other groups): ("operator", "admin").
    approvals: int = 1
    quorum_over: dict[str, float | str | tuple[float | str, float]] = field(default_factory=dict)
    approvers_from: tuple[str, ...] = ()


# A Django group's name as a rung names it: what a person types, without spaces or colons.
_GROUP_NAME = re.compile(r"[\w.@+-]{1,80}")


def ladder_problem(escalate: Escalate) -> str:
    """What is wrong with an escalation ladder (issue 18), in words; "" when nothing is.
    Its rungs come in time order, each before the deadline (the ladder's last step), and
    each tells an audience the console knows: operators, admins or "group:<name>"."""
    previous = 0.0
    for number, rung in enumerate(escalate.ladder, 1):
        step = f"escalation ladder step {number}"
        if not isinstance(rung, Rung):
            return f"{step} is {rung!r}: write Remind(after_s, to=…) or EscalateTo(after_s, to=…)"
        if rung.action not in ("remind", "escalate"):
            return f"{step}: the action must be remind or escalate, not {rung.action!r}"
        to = rung.to if isinstance(rung.to, str) else ""
        group = to.removeprefix(GROUP_PREFIX) if to.startswith(GROUP_PREFIX) else ""
        if to not in LADDER_AUDIENCES and not _GROUP_NAME.fullmatch(group):
            return (
                f"{step} goes to {rung.to!r}: use operators, admins or group:<name> (a group's "
                "name: letters, digits and . @ + - _)"
            )
        if rung.action == "escalate" and rung.to == "operators":
            return f"{step} escalates to operators, the first tier: escalate to admins or a group"
        if not isinstance(rung.after_s, int | float) or rung.after_s <= previous:
            after = "after the interrupt is raised" if number == 1 else f"after step {number - 1}"
            return f"{step} at {rung.after_s!r} s must come {after} (times count from the raise)"
        if rung.after_s >= escalate.deadline_s:
            return (
                f"{step} at {rung.after_s:g} s is not before the deadline ({escalate.deadline_s:g} "
                f"s), where the default ({escalate.default_action}) applies"
            )
        previous = rung.after_s
    return ""


@dataclass(frozen=True)
class Policy:
    exits: Exits
    retry: Retry = Retry()
    validation_rounds: int = 3
    on_validation_exhausted: Literal["interrupt", "fail"] = "fail"
    # Fewer bids than the quorum: broadcast again next iteration, or end the run.
    on_insufficient_bids: Literal["retry", "fail"] = "retry"
    escalation: Escalate = Escalate()
    # Where the run would end exhausted for its budget: end it ("exhaust"), or first ask a
    # person whether to extend the budget, and by how much, within the parent's remainder
    # ("ask": loops.engine.budget; CONCEPTS 37, 69). The question keeps `escalation`'s
    # deadline and default action.
    on_budget: Literal["exhaust", "ask"] = "exhaust"


@dataclass(frozen=True)
class BlueprintSpec:
    name: str
    kind: Literal["main", "sub", "micro"]
    domain: str
    phases: tuple[Phase, ...]
    policy: Policy
    # top_k and thompson (CONCEPTS 65) choose top_k bidders (1 if unset); thompson ranks by
    # a draw from each agent's success posterior times its confidence.
    selection: Literal["all", "best", "top_k", "thompson"] = "all"
    top_k: int | None = None
    quorum: int = 1
    bid_window_ms: int = 2000
    gather_deadline_ms: int = 30000
    merge: str = "highest_confidence"
    consensus_threshold: float = 0.5
    validators: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    max_depth: int | None = None
    description: str = ""
    # Federation (DESIGN.md section 8). export: a skill of this realm's agent card, which a
    # peer's grant may let it call; input_schema: what a caller's input must match.
    export: bool = False
    input_schema: dict[str, Any] | None = None
    # Set on the spec of a remote frame only, (realm, blueprint): a child named
    # "<realm>:<blueprint>" in `children` runs in that peer realm (loops.declare).
    remote: tuple[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("name", "kind", "domain", "description"):
            data.pop(key)
        return data


@dataclass(frozen=True)
class DomainSpec:
    slug: str
    name: str
    description: str = ""


@dataclass(frozen=True)
class AgentSpec:
    domain: str
    name: str
    implementation: str  # a python_agent registry key ("" for a remote agent)
    capabilities: tuple[str, ...] = ()
    task_types: tuple[str, ...] = ()
    adapter: Literal["python", "http", "llm", "realm", "a2a"] = "python"
    config: dict[str, Any] = field(default_factory=dict)  # a remote agent's (loops.agents)


@dataclass(frozen=True)
class BreakerSpec:
    """A circuit breaker (CONCEPTS 41), mirrored into oversight.CircuitBreaker by name.

    scope is "agent:<domain>/<name>", "blueprint:<name>" or "domain:<slug>"; metric one of
    consecutive_failures, error_rate, cost_window, latency, reported_value (with value_key).
    """

    name: str
    scope: str
    metric: str
    threshold: float
    window_s: int = 60
    min_calls: int = 5
    value_key: str = ""
    cooldown_s: int = 30
