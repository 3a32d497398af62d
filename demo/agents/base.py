"""What every demo agent shares: DemoAgent (a bid at its confidence, the external system's
faults before the work), the readers of a task's input and of its earlier phases' results,
and SecondOpinion, the rate-limited agent every domain hears.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any

from django.conf import settings

from demo import faults
from loops.declare import python_agent
from loops.messages import Bid, Decline, Outcome, Task


class DemoAgent(ABC):
    confidence = 0.8
    system = ""  # the external system this agent calls, if any
    cost = 0.0  # what one call costs (an external lookup is billed)

    def bid(self, task: Task) -> Bid | Decline | None:
        return Bid(confidence=self.confidence, est_cost=self.cost)

    def perform(self, task: Task) -> Outcome:
        if self.system:
            faults.external_call(self.system)
        return self.work(task)

    @abstractmethod
    def work(self, task: Task) -> Outcome:
        """Each agent's own computation: a demo agent without one cannot be made."""


def given(task: Task) -> dict[str, Any]:
    return task.context.get("input") or {}


def phase_results(task: Task) -> dict[str, Any]:
    return task.context.get("phases", {})


@python_agent("demo.second-opinion")
class SecondOpinion(DemoAgent):
    """A hosted model behind a rate limit: it hears every main- and sub-loop broadcast but
    mostly cannot answer within the bid window, so the loop waits the window out (CONCEPTS
    23) — this is what paces the demo (DEMO_PACE_SECONDS). When it does answer, it has
    nothing to add to a routine case."""

    def bid(self, task: Task) -> Bid | Decline | None:
        if settings.DEMO_PACE_SECONDS == 0 or random.random() < 0.25:  # noqa: S311
            return Decline("no second opinion needed: a routine case")
        return None  # rate-limited: no answer in the window

    def work(self, task: Task) -> Outcome:
        return Outcome(output=None)
