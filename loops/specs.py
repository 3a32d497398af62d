"""What a declaration holds: a blueprint's phases and policy (exits, retries, escalation),
and the specs of blueprints, domains, agents and breakers that loops.declare registers.

Frozen values; loops.declare checks them when they are declared.
"""

from __future__ import annotations

import dataclasses
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


@dataclass(frozen=True)
class Escalate:
    """When a loop stops for a human, and what happens if nobody answers (CONCEPTS 37, 40).

    A merged result whose best confidence is under confidence_below, or with a number over
    its limit in over, is interrupted before it is used. A limit is a number
    ({"dose_mg": 1000}) or the name of another field of the same result, for limits that
    depend on the case ({"dose_mg": "max_dose_mg"}: the patient's and drug's maximum).
    """

    confidence_below: float | None = None
    over: dict[str, float | str] = field(default_factory=dict)
    deadline_s: float = 3600.0
    default_action: Literal["approve", "reject"] = "reject"
    # What the loop does instead when a person rejects, in words shown beside the reject
    # button (oversight.presenting.choices), e.g. "the doser then proposes no more than the
    # maximum". "" : the console says only that the step runs again with the comment.
    on_reject: str = ""
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


@dataclass(frozen=True)
class Policy:
    exits: Exits
    retry: Retry = Retry()
    validation_rounds: int = 3
    on_validation_exhausted: Literal["interrupt", "fail"] = "fail"
    # Fewer bids than the quorum: broadcast again next iteration, or end the run.
    on_insufficient_bids: Literal["retry", "fail"] = "retry"
    escalation: Escalate = Escalate()


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
