"""Loops on real Celery worker processes, against the test database and Redis."""

from __future__ import annotations

import psutil
import pytest
from django.db import connection
from django.db.models import Count

from loops import services
from loops.models import Contribution, Event, Iteration, LoopRun
from tests.conftest import start_worker, wait_for

# The workers must see committed rows.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("declared")]
State = LoopRun.State


def _all_ended(run_ids: list[int]) -> bool:
    return (
        not LoopRun.objects.filter(root_id__in=run_ids).exclude(state__in=LoopRun.TERMINAL).exists()
    )


def test_it_runs_a_main_sub_micro_stack_to_completion(celery_worker):
    run = services.run_start(domain="lab", blueprint="lab-main", input={"x": 6})

    wait_for(lambda: _all_ended([run.pk]))

    stack = {r.depth: r for r in LoopRun.objects.filter(root_id=run.pk)}
    assert {d: r.state for d, r in stack.items()} == {
        0: "succeeded",
        1: "succeeded",
        2: "succeeded",
    }
    assert stack[2].parent_id == stack[1].pk and stack[1].parent_id == stack[0].pk
    assert stack[2].result == 36
    assert stack[0].result == {"lab-sub": {"square": 36, "summary": "the square is 36"}}


def test_it_loses_nothing_when_a_worker_is_killed_mid_run(celery_worker):
    """SIGKILL a worker while it performs; a new worker with the reaper finishes every run
    with no duplicate iteration, bid, contribution or event (DESIGN.md H4, CONCEPTS 25)."""
    doomed = start_worker(connection.settings_dict["NAME"], name="doomed")
    celery_worker.stop()  # so the doomed worker takes the runs

    def held_by_doomed() -> bool:
        pids = [f":{p.pid}:" for p in psutil.Process(doomed.process.pid).children()]
        holders = LoopRun.objects.filter(
            pk__in=runs, iterations__contributions__status="running"
        ).values_list("lease_worker", flat=True)
        return any(pid in holder for holder in holders for pid in pids)  # host:pid:thread

    try:
        runs = [
            services.run_start(domain="lab", blueprint="lab-slow", input={}).pk for _ in range(6)
        ]
        wait_for(held_by_doomed)
        doomed.kill()
        in_flight = Contribution.objects.filter(status="running").count()
        rescuer = start_worker(connection.settings_dict["NAME"], name="rescuer", beat=True)
        try:
            wait_for(lambda: _all_ended(runs), timeout=90)
        finally:
            rescuer.stop()
    finally:
        if doomed.process.poll() is None:
            doomed.kill()  # the test failed before its kill: leave no worker behind

    assert in_flight >= 1
    assert set(LoopRun.objects.filter(pk__in=runs).values_list("state", flat=True)) == {
        State.SUCCEEDED
    }
    for run_id in runs:
        numbers = list(Iteration.objects.filter(run_id=run_id).values_list("number", flat=True))
        assert numbers == [1, 2]
        seqs = list(Event.objects.filter(root_id=run_id).values_list("seq", flat=True))
        assert seqs == list(range(1, len(seqs) + 1))
    per_iteration = Iteration.objects.filter(run_id__in=runs).annotate(
        n_bids=Count("bids", distinct=True), n_contributions=Count("contributions", distinct=True)
    )
    assert {(i.n_bids, i.n_contributions) for i in per_iteration} == {(1, 1)}
    assert (
        not Contribution.objects.filter(iteration__run_id__in=runs)
        .exclude(status="completed")
        .exists()
    )


def test_it_keeps_one_gapless_trace_while_children_run_at_once(celery_worker):
    """Four children of one parent step at once on the worker's two processes, all writing
    to the root's trace: its seqs stay gapless and in commit order (CONCEPTS 52)."""
    run = services.run_start(domain="lab", blueprint="lab-fanout", input={})

    wait_for(lambda: _all_ended([run.pk]), timeout=60)

    run.refresh_from_db()
    assert run.state == State.SUCCEEDED
    assert set(run.result) == {f"lab-leaf-{n}" for n in range(1, 5)}
    events = list(Event.objects.filter(root_id=run.pk).order_by("seq"))
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    writers = {e.run_id for e in events}
    assert len(writers) == 5  # the root and its four children


def test_it_cancels_a_stack_while_its_children_run_and_return(celery_worker):
    """The cancel locks parent then children; children ending lock child then parent. Whoever
    PostgreSQL picks as the deadlock victim runs again: the stack ends cancelled, whole."""
    run = services.run_start(domain="lab", blueprint="lab-fanout", input={})
    wait_for(lambda: LoopRun.objects.filter(parent=run, iterations__isnull=False).exists())

    services.run_cancel(run_id=run.pk, reason="operator stop")

    wait_for(lambda: _all_ended([run.pk]))
    stack = LoopRun.objects.filter(root_id=run.pk)
    assert LoopRun.objects.get(pk=run.pk).state == State.CANCELLED
    assert not stack.filter(exit_reason="").exists()  # every frame says why it ended
    assert not stack.filter(state=State.WAITING).exists()
