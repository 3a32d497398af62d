"""What one iteration costs the database, counted in statements (issue 14): the engine's hot
path is a few set-based statements per transaction, and this count may only go down. It is a
count, not a time: the benchmark (`./bin/bench core`) measures the time."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from loops import engine, services
from loops.declare import sync_declarations
from loops.models import Iteration, LoopRun

# Inside the test's transaction (where no worker sees the run, and nothing is sent on
# commit), each of the step's transactions is a SAVEPOINT and its RELEASE instead of BEGIN
# and COMMIT: as many statements as on a worker.
pytestmark = pytest.mark.django_db

# The claim, one statement: the lease, the run, its open iteration, the gate, the agents.
# Then two transactions of four: BEGIN; lock the run and ask the gate; one write that
# carries the trace (the open: the iteration with its bids, selection and calls; the close:
# the results, the merge, the verdict and the run); COMMIT. The old engine sent 24 ORM
# statements and its BEGINs and COMMITs for the same iteration (docs/BENCHMARKS.md).
STATEMENTS_PER_NO_OP_ITERATION = 9


def test_a_no_op_iteration_costs_a_handful_of_statements():
    sync_declarations()
    run = services.run_start(domain="tally", blueprint="tally-iterate", input={})
    engine.advance(run_id=run.pk)  # the first: the run's first claim, warm caches

    with CaptureQueriesContext(connection) as statements:
        engine.advance(run_id=run.pk)

    closed = Iteration.objects.filter(run=run, closed_at__isnull=False).count()
    assert (closed, LoopRun.objects.get(pk=run.pk).state) == (2, LoopRun.State.RUNNING)
    sql = "\n".join(q["sql"] for q in statements.captured_queries)
    assert len(statements) <= STATEMENTS_PER_NO_OP_ITERATION, f"{len(statements)}:\n{sql}"


def test_iterations_that_follow_in_the_same_task_need_no_claim():
    """While its slice lasts, a task goes on with the run it holds: the close left the run
    as it is and the agents are those it read, so only the first iteration is claimed."""
    sync_declarations()
    run = services.run_start(domain="tally", blueprint="tally-iterate", input={})
    engine.advance(run_id=run.pk)

    with CaptureQueriesContext(connection) as statements:
        engine.advance(run_id=run.pk, slice_s=60)  # the 9 iterations left, to the bound

    ended = LoopRun.objects.get(pk=run.pk)
    assert (ended.state, ended.iteration) == (LoopRun.State.EXHAUSTED, 10)
    sql = "\n".join(q["sql"] for q in statements.captured_queries)
    # One claim, nine iterations without theirs, and the exhausted run's best result so far.
    claim_once = 1 + 9 * (STATEMENTS_PER_NO_OP_ITERATION - 1) + 1
    assert len(statements) <= claim_once, f"{len(statements)}:\n{sql}"
