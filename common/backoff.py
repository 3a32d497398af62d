"""The one backoff of the project: how long to wait after the n-th failed attempt, for agent
calls (Loopcraft L1, CONCEPTS 56, 57), notification deliveries and database retries."""

from __future__ import annotations

import random
from typing import Literal

# Not a secret: seeded by tests (CONCEPTS 57).
RNG = random.Random()  # noqa: S311


def backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: Literal["full", "equal", "none"] = "full",
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait after the `attempt`-th failure (1, 2, …): the ceiling min(cap,
    base·2^(attempt-1)); "full" jitter draws the wait from [0, ceiling] (spreads retries
    most), "equal" from [ceiling/2, ceiling] (every wait longer than the one before, until
    the cap), "none" waits the ceiling."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    draw = (rng or RNG).uniform
    if jitter == "full":
        return draw(0, ceiling)
    if jitter == "equal":
        return draw(ceiling / 2, ceiling)
    return ceiling
