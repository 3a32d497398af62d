"""What every adapter is, and the errors the retry layer tells apart (CONCEPTS 58)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from loops.messages import Bid, Decline, Outcome, Task

# Asking again may work: the agent was slow, unreachable, busy or broken for a moment; or,
# for context_length, the adapter sends a shorter prompt next time (CONCEPTS 59).
RETRYABLE = frozenset({"timeout", "connection", "rate_limited", "server_error", "context_length"})
# Asking again the same way gets the same answer: a refused or malformed request, a policy
# refusal, an answer that is not what the contract says (invalid_output goes to validation,
# L2), or a call the budget cannot pay for.
NOT_RETRYABLE = frozenset(
    {"client_error", "request_validation", "policy", "invalid_output", "budget", "error"}
)
ERROR_CLASSES = RETRYABLE | NOT_RETRYABLE


class AgentError(Exception):
    """An agent call failed. error_class is one of ERROR_CLASSES; retryable defaults to what
    the class says. retry_after (seconds) is the agent's own "not before" (a 429's header);
    adjust is carried into the next attempt's retry_context (e.g. a shorter prompt).

    tokens, cost and trace are what the call used before it failed (a ReAct loop that made
    several completions, CONCEPTS 61): they count for the call and its run all the same.
    """

    def __init__(
        self,
        message: str,
        *,
        error_class: str,
        retryable: bool | None = None,
        retry_after: float | None = None,
        adjust: dict[str, Any] | None = None,
        tokens: int = 0,
        cost: float = 0.0,
        trace: tuple[dict[str, Any], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_class = error_class
        self.retryable = error_class in RETRYABLE if retryable is None else retryable
        self.retry_after = retry_after
        self.adjust = dict(adjust or {})
        self.tokens, self.cost, self.trace = tokens, cost, trace


class Adapter(Protocol):
    @property
    def remote(self) -> bool:
        """Whether a call leaves this process: the engine then re-checks the oversight gate
        and extends its lease over timeout_s before every attempt (DESIGN.md H1)."""

    @property
    def timeout_s(self) -> float:
        """The longest one perform() may take."""

    def bid(self, task: Task, timeout_s: float | None = None) -> Bid | Decline | None:
        """A bid, a decline, or None for "no answer yet"; may raise AgentError. A remote
        agent gets at most timeout_s (the bid window) to answer."""

    def perform(self, task: Task, retry_context: dict[str, Any] | None = None) -> Outcome:
        """Do the work once, or raise AgentError; retry_context names the previous failure."""
