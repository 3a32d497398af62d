"""What one step knows as it goes, from its claim to its last transaction."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime

from loops.engine.lease import Claim, worker
from loops.models import Agent, LoopRun
from loops.specs import BlueprintSpec


@dataclass
class Step:
    run: LoopRun  # as of the step's last transaction
    spec: BlueprintSpec | None  # None: the blueprint is no longer declared
    now: datetime  # the claim's time (a test's frozen clock)
    agents: list[Agent] = field(default_factory=list)  # who may hear a broadcast (the claim's)
    # Until when (time.monotonic) this task may go on with the run's next iteration itself
    # rather than send it to the queue: the hops between iterations are most of what an
    # iteration costs beyond its own work (DESIGN.md section 6).
    slice_ends: float = 0.0
    kept: bool = False  # the last write kept the lease, for this task to go on
    closed: bool = False  # the step ended by closing its iteration: none is open

    def go_on_here(self) -> bool:
        return time.monotonic() < self.slice_ends

    def going_on(self) -> Claim | None:
        """The next step's claim without a statement, when this one closed its iteration
        and kept the lease: the run as its last write left it, and the same agents (the
        next opening re-reads their breakers under the run's lock: AudienceChanged)."""
        if self.kept and self.closed and self.agents:
            return Claim(self.run, None, None, self.agents)
        return None

    @property
    def released(self) -> bool:
        """Whether the run's last write gave the lease up (so the step need not)."""
        return self.run.lease_worker != worker()
