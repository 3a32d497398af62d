"""Loops the operators' command tests run: the quay domain (tests.settings names this module).

No agent: the tests that start quay runs never let a worker step them.
"""

from __future__ import annotations

from loops.declare import blueprint, domain
from loops.specs import Exits, Phase, Policy

domain("quay", "Quay", "Loops the operators' terminal commands halt, decide and reset.")

blueprint(
    "quay-main",
    kind="main",
    domain="quay",
    policy=Policy(exits=Exits(max_iterations=3)),
    phases=[Phase("haul", task_type="quay.haul", capabilities=("haul",))],
)
