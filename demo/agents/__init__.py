"""The demo's in-process agents (loops.declare.python_agent): each bids on what it can do and
computes its part with demo.healthcare, demo.education or demo.industrial. Agents that stand
for an external system go through demo.faults first, so they fail and slow down; each has a
local stand-in of lower confidence that keeps the loop going while its breaker is open.

Where a person should decide (a dose over the maximum is the dosage loop's policy; a severe
interaction, a learner far behind, a critical anomaly and a risky supplier are asked for in
the agent's Outcome), the proposal carries the action; told "rejected by …", the agent
proposes the safe alternative instead of asking again.

Each domain's agents have their module (healthcare, education, industrial), built on base:
DemoAgent, and the second opinion every domain hears. Importing this package registers them
all, as demo.declarations does.
"""

from __future__ import annotations

# Imported for what they register (python_agent): the reason demo.declarations imports us.
from demo.agents import education, healthcare, industrial

__all__ = ["education", "healthcare", "industrial"]
