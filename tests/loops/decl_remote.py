"""Loops of the wire domain, whose agents are called over HTTP (tests.settings names this
module): remote HTTP agents and OpenAI-compatible LLM agents, served on loopback by the
tests themselves (tests/loops/loopback.py), which point each agent's URL at their server.

The retry policies keep base_ms small, so that tests of backoff stay fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loops.declare import agent, blueprint, domain, python_agent, remote_agent, tool
from loops.messages import Bid, Outcome
from loops.specs import Exits, Phase, Policy, Retry

domain("wire", "Wire", "Agents called over HTTP, on servers the tests start.")

# Declared to show the mirror of remote agents; no test server answers at these addresses.
remote_agent(
    "wire",
    "declared-http",
    adapter="http",
    config={"url": "http://127.0.0.1:9/agent", "secret_env": "WIRE_DECLARED_SECRET"},
    capabilities=("declared",),
)
remote_agent(
    "wire",
    "declared-llm",
    adapter="llm",
    config={"base_url": "http://127.0.0.1:9/v1", "model": "tiny", "cost_per_1k_tokens": 0.5},
    capabilities=("declared",),
    task_types=("wire.summarise",),
)

# What the halter agent does while it works: a test puts a function here (e.g. engage a
# halt), so that something happens between the claim and the next (remote) call.
WHILE_PERFORMING: list[Callable[[Any], None]] = []


@python_agent("wire.halter")
class Halter:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        for hook in WHILE_PERFORMING:
            hook(task)
        return Outcome(output={"by": "halter"})


class Shaky(RuntimeError):
    retryable = True


@python_agent("wire.shaky")
class ShakyAgent:
    """Fails until its third attempt: it counts attempts from the retry_context it is given."""

    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        attempt = (task.retry_context or {}).get("attempt", 0)
        if attempt < 2:
            raise Shaky(f"still warming up after {attempt} attempts")
        return Outcome(output={"attempts_seen": attempt})


@python_agent("wire.broken")
class Broken:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        raise ValueError("a bug, not a hiccup")


agent("wire", "halter", implementation="wire.halter", capabilities=("halting",))
agent("wire", "shaky", implementation="wire.shaky", capabilities=("shaky",))
agent("wire", "broken", implementation="wire.broken", capabilities=("broken",))


def _wire(name: str, capability: str, retry: Retry, **fields: Any) -> None:
    blueprint(
        name,
        kind="main",
        domain="wire",
        phases=[Phase("ask", task_type="wire.ask", capabilities=(capability,))],
        policy=Policy(exits=Exits(quality=("validated",), max_iterations=1), retry=retry),
        bid_window_ms=fields.pop("bid_window_ms", 2000),
        gather_deadline_ms=60_000,
        **fields,
    )


# Jitter on, small base, and a cap that a one-second Retry-After fits under.
_wire("wire-retry", "wire", Retry(max_attempts=3, base_ms=10, cap_ms=1500))
_wire("wire-llm", "llm", Retry(max_attempts=3, base_ms=10, cap_ms=1500))
# CONCEPTS 56 and 57: 20, 40, then the 50 ms cap.
_wire("wire-backoff", "backoff", Retry(max_attempts=5, base_ms=20, cap_ms=50, jitter=False))
_wire("wire-jitter", "backoff", Retry(max_attempts=5, base_ms=20, cap_ms=50, jitter=True))
_wire("wire-halt", "halting", Retry(max_attempts=3, base_ms=10, cap_ms=100))
_wire("wire-shaky", "shaky", Retry(max_attempts=3, base_ms=10, cap_ms=100))
_wire("wire-broken", "broken", Retry(max_attempts=3, base_ms=10, cap_ms=100))
_wire("wire-quick-bids", "wire", Retry(max_attempts=1), bid_window_ms=300)


# --- ReAct (CONCEPTS 61): tools for LLM agents with "mode": "react" ------------------------

FORMULARY = {"warfarin": "2-10 mg a day", "aspirin": "75-100 mg a day"}


@tool("wire.lookup")
def lookup(input, task):
    """Look a drug up in the formulary: {"drug": name}."""
    drug = input["drug"]
    return {"drug": drug, "dose": FORMULARY.get(drug, "not in the formulary")}


@tool("wire.explode")
def explode(input, task):
    """Always fails."""
    raise RuntimeError("the formulary service is down")


@tool("wire.hook")
def hook(input, task):
    """Runs the WHILE_PERFORMING hooks (e.g. engage a halt between two steps)."""
    for run in WHILE_PERFORMING:
        run(task)
    return "done"


_wire("wire-react", "react", Retry(max_attempts=3, base_ms=10, cap_ms=100))
