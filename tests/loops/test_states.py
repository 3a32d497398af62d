from __future__ import annotations

import contextlib
import threading

import pytest
from django.db import connection, transaction
from django.db.models import F

from common.db import retry_deadlocks
from loops import services
from loops.declare import sync_declarations
from loops.models import Blueprint, LoopRun, TransitionRejected

State = LoopRun.State

LEGAL = {
    ("pending", "running"),
    ("pending", "paused"),
    ("pending", "halted"),
    ("pending", "cancelled"),
    ("running", "waiting"),
    ("running", "interrupted"),
    ("running", "paused"),
    ("running", "halted"),
    ("running", "succeeded"),
    ("running", "exhausted"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("waiting", "running"),
    ("waiting", "interrupted"),
    ("waiting", "paused"),
    ("waiting", "halted"),
    ("waiting", "succeeded"),
    ("waiting", "exhausted"),
    ("waiting", "failed"),
    ("waiting", "cancelled"),
    ("interrupted", "running"),
    ("interrupted", "paused"),
    ("interrupted", "halted"),
    ("interrupted", "failed"),
    ("interrupted", "cancelled"),
    ("paused", "pending"),
    ("paused", "running"),
    ("paused", "waiting"),
    ("paused", "interrupted"),
    ("paused", "halted"),
    ("paused", "cancelled"),
    ("halted", "pending"),
    ("halted", "running"),
    ("halted", "waiting"),
    ("halted", "interrupted"),
    ("halted", "paused"),
}


@pytest.mark.parametrize("source", State.values)
@pytest.mark.parametrize("target", State.values)
def test_it_allows_exactly_the_designed_transitions(source, target):
    run = LoopRun(state=source)

    if (source, target) in LEGAL:
        run.move_to(target)
        assert run.state == target
    else:
        with pytest.raises(TransitionRejected, match=f"is {source}; it cannot become {target}"):
            run.move_to(target)
        assert run.state == source


def test_it_keeps_the_prior_state_while_paused_or_halted():
    run = LoopRun(state=State.WAITING)

    run.move_to(State.HALTED)

    assert run.prior_state == State.WAITING
    run.move_to(run.prior_state)
    assert (run.state, run.prior_state) == (State.WAITING, "")


@pytest.mark.django_db(transaction=True)
def test_it_never_lets_concurrent_reservations_exceed_the_budget():
    """20 threads reserve 0.1 each of a 1.0 budget at once: exactly 10 get it (CONCEPTS 69)."""
    sync_declarations()
    bp = Blueprint.objects.get(name="arena-all")
    run = LoopRun.objects.create(blueprint=bp, domain=bp.domain, budget=1.0, state="running")
    barrier, granted = threading.Barrier(20), []

    def reserve() -> None:
        try:
            barrier.wait()
            granted.append(services.cost_reserve(run.pk, 0.1))
        finally:
            connection.close()

    threads = [threading.Thread(target=reserve) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    run.refresh_from_db()
    assert granted.count(True) == 10
    assert run.cost_reserved == pytest.approx(1.0)
    assert run.cost + run.cost_reserved <= run.budget + 1e-9


@pytest.mark.django_db(transaction=True)
def test_it_runs_a_deadlock_victim_again():
    """Two transactions lock two runs in opposite orders: PostgreSQL aborts one, and
    retry_deadlocks runs it again, so both complete (as a cancel racing a child's return)."""
    sync_declarations()
    bp = Blueprint.objects.get(name="arena-all")
    first, second = (
        LoopRun.objects.create(blueprint=bp, domain=bp.domain, state="running") for _ in range(2)
    )
    barrier, outcomes = threading.Barrier(2), []

    @retry_deadlocks
    @transaction.atomic(durable=True)
    def lock_both(a: int, b: int) -> None:
        LoopRun.objects.select_for_update(no_key=True).get(pk=a)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=2)  # both hold their first lock before taking the second
        LoopRun.objects.select_for_update(no_key=True).get(pk=b)
        LoopRun.objects.filter(pk=b).update(tokens=F("tokens") + 1)

    def run(a: int, b: int) -> None:
        try:
            lock_both(a, b)
            outcomes.append("done")
        except Exception as exc:
            outcomes.append(repr(exc))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=pair)
        for pair in ((first.pk, second.pk), (second.pk, first.pk))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert outcomes == ["done", "done"]
    assert (
        sum(LoopRun.objects.filter(pk__in=[first.pk, second.pk]).values_list("tokens", flat=True))
        == 2
    )
