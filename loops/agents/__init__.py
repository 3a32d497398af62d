"""The processing layer (DESIGN.md section 2): how the engine calls an agent.

adapter_for(agent) is the one entry point: an in-process Python agent, a remote HTTP agent,
or a model behind an OpenAI-compatible server, each answering bid() and perform() and
raising AgentError with a class the retry layer (loops.engine.calls) acts on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from loops.agents import http, llm, python, react, realm
from loops.agents.base import RETRYABLE, Adapter, AgentError

if TYPE_CHECKING:
    from loops.models import Agent

__all__ = ["RETRYABLE", "Adapter", "AgentError", "adapter_for"]


def adapter_for(
    agent: Agent, *, keep_lease: Callable[[float], None] | None = None
) -> Adapter | None:
    """How this worker calls the agent; None when it cannot (an implementation this process
    does not have, a remote agent without an address, an adapter it does not know).
    keep_lease is the engine's check before each call an adapter makes on its own (ReAct's
    steps): the run may go on, and its lease covers the seconds given."""
    if agent.adapter == "python":
        return python.from_config(agent.config)
    if agent.adapter == "http":
        return http.from_agent(agent)
    if agent.adapter == "realm":  # a peer realm (DESIGN.md section 8)
        return realm.from_agent(agent)
    if agent.adapter == "a2a":  # any A2A agent
        return realm.from_a2a_agent(agent)
    if agent.adapter == "llm":
        if agent.config.get("mode") == "react":  # CONCEPTS 61
            return react.from_agent(agent, keep_lease)
        return llm.from_agent(agent)
    return None
