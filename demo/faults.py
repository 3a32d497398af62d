"""What goes wrong in the demo, and how often (the DEMO_* settings, read at every call so a
test can override them).

Agents that stand for an external system (the drug database, the learning-management system,
the sensor gateway, the supplier portal) call external_call() first. Like a network:

* each call fails with a transient error (retried by the engine) with DEMO_FAILURE_RATE, and
  takes DEMO_SLOW_SECONDS longer with DEMO_SLOW_RATE;
* in spells the system is down, or slow, altogether: whole SPELL_SECONDS windows, a
  DEMO_FAILURE_RATE (DEMO_SLOW_RATE) share of them, picked by hashing the system's name and
  the window, so every worker agrees without sharing any state. A spell is what trips the
  system's circuit breaker, "sometimes" at the default rates: at 0.05 a system has a bad
  spell about every 20 minutes.

The generated data (patients, learners, machines) comes from a random.Random seeded with the
run and the phase, so a run's data is the same in every round and can be reproduced.
"""

from __future__ import annotations

import random
import time

from django.conf import settings

from loops.messages import Task

SPELL_SECONDS = 60


class ExternalSystemError(ConnectionError):
    """A simulated 503 or timeout: transient, so the retry layer tries again (its
    error_class is one the engine's retry layer knows, CONCEPTS 58)."""

    retryable = True

    def __init__(self, message: str, *, error_class: str) -> None:
        super().__init__(message)
        self.error_class = error_class


def in_spell(system: str, kind: str, share: float, now: float | None = None) -> bool:
    """Whether the system is in a bad spell ("down" or "slow") at now."""
    if share <= 0:
        return False
    window = int((time.time() if now is None else now) // SPELL_SECONDS)
    return random.Random(f"{system}:{kind}:{window}").random() < share  # noqa: S311


def external_call(system: str) -> None:
    """Stand in for the network on the way to an external system."""
    slow, failure = settings.DEMO_SLOW_RATE, settings.DEMO_FAILURE_RATE
    if in_spell(system, "slow", slow) or random.random() < slow:  # noqa: S311
        time.sleep(settings.DEMO_SLOW_SECONDS)
    if in_spell(system, "down", failure):
        raise ExternalSystemError(
            f"{system} is down: 503 Service Unavailable", error_class="server_error"
        )
    if random.random() < failure:  # noqa: S311
        raise ExternalSystemError(f"{system} did not answer in time", error_class="timeout")


def rng_for(task: Task, what: str) -> random.Random:
    """The random source of the data a run generates: the same for the run in every round."""
    return random.Random(f"demo:{task.run_id}:{task.phase}:{what}")  # noqa: S311


def hazard(rng: random.Random) -> bool:
    """Whether a generated case crosses a limit a person must decide on."""
    return rng.random() < settings.DEMO_ESCALATION_RATE


def rejected(task: Task) -> str:
    """What a person said when rejecting this phase's last proposal, or ""."""
    return next((line for line in task.feedback if line.startswith("rejected by")), "")
