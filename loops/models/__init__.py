"""The loops app's models (import direction, STYLE.md B.2: nothing here imports oversight)."""

from __future__ import annotations

from common.states import TransitionRejected
from loops.models.registry import Agent, AgentStat, ApiToken, Blueprint, Domain, DomainMinute
from loops.models.runs import Bid, Contribution, Event, EventCounter, Iteration, LoopRun

__all__ = [
    "Agent",
    "AgentStat",
    "ApiToken",
    "Bid",
    "Blueprint",
    "Contribution",
    "Domain",
    "DomainMinute",
    "Event",
    "EventCounter",
    "Iteration",
    "LoopRun",
    "TransitionRejected",
]
