"""One transaction of a step (issue 14): the run locked and the gate asked in one statement,
the events collected as the step works and written once: with the transaction's write
statement (engine.writes), or at the end if something came after it.

Every transaction of a step goes through `step_tx`, so none can forget the re-check that
makes a pause, a cancel or a halt committed meanwhile turn the rest of the step into a
no-op (DESIGN.md H1): `tx.may` says whether the run may go on, `tx.require()` stops here if
not (the transaction rolls back), and results that arrive anyway are written `held`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import transaction

from common.db import prepared_cursor
from loops.engine.lease import RUNS, State, StepAborted, blueprint, worker
from loops.models import LoopRun
from loops.trace import Trace
from oversight import gates

# The run, locked FOR NO KEY UPDATE (rows inserted meanwhile check their foreign keys
# against it with FOR KEY SHARE, which must not wait); the gate; and whether any breaker
# watches these calls (their agents', the blueprint's, the domain's), so that a step with
# none pays nothing for them; and which of these agents a breaker holds open now.
_LOCK = f"""
SELECT {RUNS.columns}, {gates.stop_columns("r")},
    EXISTS (SELECT 1 FROM oversight_circuitbreaker b
            WHERE (b.scope = 'agent' AND b.agent_id = ANY(%(agents)s))
               OR (b.scope = 'blueprint' AND b.blueprint_id = r.blueprint_id)
               OR (b.scope = 'domain' AND b.domain_id = r.domain_id)) AS breakers,
    ARRAY(SELECT b.agent_id FROM oversight_circuitbreaker b
          WHERE b.scope = 'agent' AND b.agent_id = ANY(%(agents)s) AND b.state <> 'closed')
        AS tripped
FROM loops_looprun r WHERE r.id = %(run)s
FOR NO KEY UPDATE OF r
"""


@dataclass
class Tx:
    run: LoopRun  # locked, as it is now
    stop: gates.Stop  # a halt or a breaker that stops it
    breakers: bool  # whether any breaker watches the calls this transaction records
    tripped: set[int]  # those of its agents whose breaker is not closed
    trace: Trace
    # As the run was locked: running, ours, and neither halted nor held by a breaker. (What
    # the step then does to the run, giving its lease up say, does not change the answer.)
    may: bool = False

    def __post_init__(self) -> None:
        self.may = (
            self.run.state == State.RUNNING
            and self.run.lease_worker == worker()
            and self.stop is None
        )

    def require(self) -> LoopRun:
        if not self.may:
            raise StepAborted
        return self.run


@contextmanager
def step_tx(run_id: int, *, agents: Sequence[int] = ()) -> Iterator[Tx]:
    """1. Lock the run and ask the gate (one statement).
    2. The caller works with tx.run, adding its events to tx.trace.
    3. Whatever events the write statement did not take are written (in a no-op iteration
       none are left), and the transaction commits."""
    with transaction.atomic():
        with prepared_cursor() as cursor:
            cursor.execute(_LOCK, {"run": run_id, "agents": list(agents)})
            row = cursor.fetchone()
        if row is None:
            raise LoopRun.DoesNotExist(f"run {run_id} is gone")
        run = RUNS.build(row[: RUNS.width])
        run.blueprint = blueprint(run.blueprint_id)
        halt, breaker, breakers, tripped = row[RUNS.width :]
        tx = Tx(run, gates.stop_of(halt, breaker), breakers, set(tripped), Trace(run.root_id))
        yield tx
        tx.trace.write()
