"""In-process agents: classes registered with loops.declare.python_agent."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from loops.agents.base import AgentError
from loops.declare import IMPLEMENTATIONS
from loops.messages import Bid, Decline, Outcome, Task


@dataclass(frozen=True)
class PythonAdapter:
    implementation: Callable[[], Any]
    remote: ClassVar[bool] = False
    timeout_s: ClassVar[float] = 0.0
    bid_timeout_s: ClassVar[float] = 0.0

    def bid(self, task: Task, timeout_s: float | None = None) -> Bid | Decline | None:
        return self.implementation().bid(task)

    def perform(self, task: Task, retry_context: dict[str, Any] | None = None) -> Outcome:
        if retry_context is not None:
            task = dataclasses.replace(task, retry_context=retry_context)
        try:
            return self.implementation().perform(task)
        except AgentError:
            raise
        except Exception as exc:
            # An agent's own exception: retryable only if it says so (retryable = True).
            error_class = getattr(exc, "error_class", None)
            raise AgentError(
                f"{type(exc).__name__}: {exc}",
                error_class=error_class if isinstance(error_class, str) else "error",
                retryable=bool(getattr(exc, "retryable", False)),
            ) from exc


def from_config(config: dict[str, Any]) -> PythonAdapter | None:
    """None when this process has no such implementation (another worker's agent)."""
    implementation = IMPLEMENTATIONS.get(config.get("implementation", ""))
    return PythonAdapter(implementation) if implementation is not None else None
