"""What agents and validators exchange with the engine: the Task a broadcast hands an agent,
its answers (Bid, Decline, Outcome with any Spawn or Escalation) and a validator's Verdict.

Frozen values, imported by whoever writes an agent (loops.declare.python_agent, the adapters
of loops.agents) and by the engine that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Task:
    """What a broadcast asks: handed to an agent's bid() and perform()."""

    run_id: int
    iteration: int
    phase: str
    task_type: str
    payload: dict[str, Any]
    context: dict[str, Any]
    feedback: tuple[str, ...] = ()  # what validators said about the previous round
    # On a retried call: the previous attempt's {attempt, error_class, message} (CONCEPTS 59).
    retry_context: dict[str, Any] | None = None


@dataclass(frozen=True)
class Bid:
    confidence: float
    est_cost: float = 0.0


@dataclass(frozen=True)
class Decline:
    reason: str


# A contribution whose output is {FRAME: call_key} stands for the child frame it spawned
# (a peer realm selected in a broadcast): the judge takes that child's result as its output.
FRAME = "$frame"


@dataclass(frozen=True)
class Spawn:
    """A selected agent's request to call a child loop (CONCEPTS 9, 26)."""

    blueprint: str
    input: dict[str, Any] = field(default_factory=dict)
    key: str = ""  # where the parent keeps the result; the blueprint's name by default

    @property
    def call_key(self) -> str:
        return self.key or self.blueprint


@dataclass(frozen=True)
class Escalation:
    """An agent's request that a human decide on its proposal (CONCEPTS 37, 40)."""

    reason: str
    proposal: Any = None  # what the agent proposes; defaults to its output
    severity: Literal["info", "warning", "critical"] = "warning"
    rationale: str = ""
    # What was crossed, for the console to say it in words (oversight.presenting):
    # {"field", "value", "limit"} and "limit_field" when the limit is another field.
    limit: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    output: Any
    cost: float = 0.0
    tokens: int = 0
    rationale: str = ""
    spawn: tuple[Spawn, ...] = ()
    escalate: Escalation | None = None
    # Values the agent reports, watched by reported_value breakers (CONCEPTS 41).
    metrics: dict[str, float] = field(default_factory=dict)
    # Steps the agent took on the way, each {"type": event type, **payload}: written as
    # events with the call's result (a ReAct loop's thoughts, actions and observations).
    trace: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    score: float | None = None
    feedback: str = ""
