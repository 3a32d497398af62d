"""Fault tests (issue 8): a worker SIGKILLed mid-step, Redis and PostgreSQL restarted mid-run.
After each fault, check_invariants() asserts what DESIGN.md H1 and H4 promise: every run
ends (or keeps iterating), no lease is left behind, no row twice, a gapless trace, every
decision applied once, every halt still holding and lifting cleanly.

Every wait has a deadline; the services restart on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import connection, connections
from django.db.models import Count
from django.utils import timezone

from loops import services
from loops.models import Bid, Contribution, Event, Iteration, LoopRun
from oversight.models import Halt, Interrupt
from oversight.services import halts
from tests.conftest import Worker, person, start_worker, wait_for

State = LoopRun.State
# What a step writes when it starts work: none may be later than a halt's commit.
STARTS = ["iteration.broadcast", "bid.received", "selection.made", "agent.call.requested"]
# The reaper sweeps every 5 s; a lease may lapse by LOOP_LEASE_SECONDS before it is due.
SWEEP_SECONDS = 5


@pytest.fixture
def workers(celery_worker: Worker) -> Iterator[list[Worker]]:
    """The test's own workers (start them with start_worker and append them): the session's
    worker is stopped first, so that the faulted workers take every step (the next test that
    asks for celery_worker gets a fresh one)."""
    celery_worker.stop()
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.stop()


def new_worker(workers: list[Worker], name: str, *, beat: bool = True) -> Worker:
    worker = start_worker(connection.settings_dict["NAME"], name=name, beat=beat)
    workers.append(worker)
    return worker


def user(name: str, role: str):
    return person(name, role, email=f"{name}@example.org")


@dataclass
class Mix:
    """Runs started before a fault, and what each must do after it."""

    ending: list[int] = field(default_factory=list)  # roots that must reach `expected`
    expected: dict[int, str] = field(default_factory=dict)
    forever: list[int] = field(default_factory=list)  # depot-loop roots: keep iterating
    halted: list[int] = field(default_factory=list)  # parked by the halt of the test
    interrupts: list[int] = field(default_factory=list)  # decided by the test

    @property
    def roots(self) -> list[int]:
        return [*self.ending, *self.forever, *self.halted]


def start_mix(
    *, slow: int = 0, stacks: int = 0, fanouts: int = 0, forever: int = 0, halted: int = 0
) -> Mix:
    """lab-slow (two 0.3 s calls), lab-main (a main → sub → micro stack) and lab-fanout
    (four children at once) must succeed; depot-loop runs count until stopped: `forever`
    ones must keep iterating, `halted` ones are for the test's run-scoped halts."""
    mix = Mix()
    for blueprint, count in (("lab-slow", slow), ("lab-main", stacks), ("lab-fanout", fanouts)):
        for _ in range(count):
            run = services.run_start(domain="lab", blueprint=blueprint, input={"x": 3})
            mix.ending.append(run.pk)
            mix.expected[run.pk] = State.SUCCEEDED
    for target, count in ((mix.forever, forever), (mix.halted, halted)):
        for _ in range(count):
            target.append(services.run_start(domain="depot", blueprint="depot-loop", input={}).pk)
    return mix


def start_interrupt() -> tuple[int, Interrupt]:
    """A ward-dose run that stops for a human: 1,600 mg is over the 1,000 mg limit."""
    run = services.run_start(domain="ward", blueprint="ward-dose", input={})
    interrupt = wait_for(
        lambda: Interrupt.objects.filter(run_id=run.pk, status="pending").first(), 60
    )
    return run.pk, interrupt


def halt_runs(actor, run_ids: list[int]) -> list[Halt]:
    return [
        halts.halt_engage(actor=actor, scope=f"run:{pk}", reason="fault drill")[0] for pk in run_ids
    ]


def iterations_of(run_ids: list[int]) -> dict[int, int]:
    counts = dict.fromkeys(run_ids, 0)
    for row in (
        Iteration.objects.filter(run__root_id__in=run_ids)
        .values("run__root_id")
        .annotate(n=Count("id"))
    ):
        counts[row["run__root_id"]] = row["n"]
    return counts


def alive_db(timeout: float = 30) -> None:
    """This process's own connection, after PostgreSQL went away: drop it, reconnect. And
    drop the one asgiref's sync thread holds: the async tests' database work runs in that
    one long-lived thread (sync_to_async), so its dead connection would fail whichever of
    them comes next."""
    SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout)
    deadline = time.monotonic() + timeout
    while True:
        connection.close()
        try:
            connection.ensure_connection()
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return
        except Exception:  # refused, or "the database system is starting up"
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- The invariants -------------------------------------------------------------------


def check_invariants(
    mix: Mix, *, halts_held: list[Halt] = (), lifter=None, timeout: float = 60
) -> None:
    """Everything DESIGN.md H1 and H4 promise after a fault, each wait bounded by timeout:

    1. every halt engaged still holds: its runs halted, nothing started in scope since it
       committed; then (with lifter) it lifts cleanly: every run back to its prior state
       and iterating again;
    2. every run that must end ends in its expected state; every forever-run iterates on;
    3. every decision taken is applied exactly once (one `decision.applied` per decided or
       expired interrupt of the run);
    4. no running run keeps a lease that lapsed longer ago than a reaper sweep;
    5. no iteration number twice in a run, numbers 1..n; no bid or contribution twice per
       (iteration, agent); the trace's seqs unique and gapless per root.
    """
    halts_held = list(halts_held)
    for halt in halts_held:
        _assert_holds(halt)
    if lifter is not None:
        for halt in halts_held:
            _lift_cleanly(halt, lifter, timeout)
    wait_for(lambda: _ended(mix.ending), timeout)
    states = dict(LoopRun.objects.filter(pk__in=mix.ending).values_list("pk", "state"))
    assert states == {pk: mix.expected[pk] for pk in mix.ending}, _why(mix.ending)
    iterating = [*mix.forever, *(mix.halted if lifter is not None else [])]
    if iterating:
        before = iterations_of(iterating)
        wait_for(lambda: _all_grew(before, iterations_of(iterating)), timeout)
    for interrupt_run in mix.interrupts:
        wait_for(lambda pk=interrupt_run: _decisions_applied(pk), timeout)
    _assert_no_lapsed_lease(mix.roots + mix.interrupts, timeout)
    assert_no_duplicates(mix.roots + mix.interrupts)


def _ended(run_ids: list[int]) -> bool:
    return not (
        LoopRun.objects.filter(root_id__in=run_ids).exclude(state__in=LoopRun.TERMINAL).exists()
    )


def _why(run_ids: list[int]) -> list:
    return list(
        LoopRun.objects.filter(pk__in=run_ids)
        .exclude(state=State.SUCCEEDED)
        .values_list("pk", "blueprint__name", "state", "exit_reason", "exit_detail")
    )


def _all_grew(before: dict[int, int], after: dict[int, int]) -> bool:
    return all(after[pk] > before[pk] for pk in before)


def _decisions_applied(run_id: int) -> bool:
    taken = Interrupt.objects.filter(run__root_id=run_id, status__in=["decided", "expired"])
    applied = Event.objects.filter(root_id=run_id, type="decision.applied").count()
    assert applied <= taken.count(), f"run {run_id}: a decision applied twice"
    return taken.exists() and applied == taken.count()


def _assert_holds(halt: Halt) -> None:
    halt.refresh_from_db()
    assert halt.is_active, f"{halt} was lifted by nobody"
    in_scope = LoopRun.objects.filter(root_id=halt.run_id)
    states = set(in_scope.values_list("state", flat=True))
    assert states <= {State.HALTED, *LoopRun.TERMINAL}, (halt.scope, states)
    started = [
        *Event.objects.filter(root_id=halt.run_id, type__in=STARTS, ts__gt=halt.created_at),
        *Iteration.objects.filter(run__root_id=halt.run_id, started_at__gt=halt.created_at),
        *Contribution.objects.filter(
            iteration__run__root_id=halt.run_id, started_at__gt=halt.created_at
        ),
    ]
    assert started == [], f"work started under {halt.scope}: {started}"


def _lift_cleanly(halt: Halt, lifter, timeout: float) -> None:
    prior = dict(
        Event.objects.filter(type="run.halted", payload__halt=halt.pk).values_list(
            "run_id", "payload__prior_state"
        )
    )
    halts.halt_lift(halt_id=halt.pk, actor=lifter, reason="drill over")
    halt.refresh_from_db()
    assert not halt.is_active
    restored = dict(
        Event.objects.filter(type="run.lifted", payload__halt=halt.pk).values_list(
            "run_id", "payload__state"
        )
    )
    assert restored == prior, (prior, restored)  # every run it parked, to its prior state
    assert not LoopRun.objects.filter(root_id=halt.run_id, state=State.HALTED).exists()
    wait_for(
        lambda: Iteration.objects.filter(
            run__root_id=halt.run_id, started_at__gt=halt.lifted_at
        ).exists(),
        timeout,
    )


def _assert_no_lapsed_lease(run_ids: list[int], timeout: float) -> None:
    """A running run whose lease lapsed more than a sweep (and a lease) ago was forgotten."""
    grace = timedelta(seconds=SWEEP_SECONDS + settings.LOOP_LEASE_SECONDS + 5)

    def none_lapsed() -> bool:
        return not LoopRun.objects.filter(
            root_id__in=run_ids,
            state=State.RUNNING,
            lease_expires_at__lt=timezone.now() - grace,
        ).exists()

    wait_for(none_lapsed, timeout)


def assert_no_duplicates(root_ids: list[int]) -> None:
    runs = LoopRun.objects.filter(root_id__in=root_ids)
    for run_id, numbers in _grouped(
        Iteration.objects.filter(run__in=runs).order_by("run_id", "number"), "run_id", "number"
    ).items():
        assert numbers == list(range(1, len(numbers) + 1)), f"run {run_id}: iterations {numbers}"
    for model in (Bid, Contribution):
        twice = (
            model.objects.filter(iteration__run__in=runs)
            .values("iteration_id", "agent_id")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
        )
        assert not twice.exists(), f"{model.__name__} twice: {list(twice)}"
    for root_id, seqs in _grouped(
        Event.objects.filter(root_id__in=root_ids).order_by("root_id", "seq"), "root_id", "seq"
    ).items():
        assert seqs == list(range(1, len(seqs) + 1)), f"root {root_id}: trace seqs {seqs}"
    assert not Contribution.objects.filter(
        iteration__run__in=runs.filter(state__in=LoopRun.TERMINAL), status="running"
    ).exists(), "a call left running in an ended run"


def _grouped(queryset, key: str, value: str) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for k, v in queryset.values_list(key, value):
        out.setdefault(k, []).append(v)
    return out


def stop_all(run_ids: list[int]) -> None:
    """Cancel what the test leaves running, so that its workers stop soon after (a clean
    stop finishes the steps in hand, and the flush waits for the stop)."""
    for pk in (
        LoopRun.objects.filter(pk__in=run_ids)
        .exclude(state__in=LoopRun.TERMINAL)
        .values_list("pk", flat=True)
    ):
        with contextlib.suppress(Exception):
            services.run_cancel(run_id=pk, reason="end of fault test")
