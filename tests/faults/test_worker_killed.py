"""SIGKILL a worker (with beat) in the middle of a burst of every kind of run: steps in
flight, calls in flight, children returning, a decision and a halt; a new worker with the
reaper finishes the work and every invariant of tests/faults/conftest.py holds.

tests/loops/test_worker.py kills a worker under six lab-slow runs and checks their rows;
this one adds stacks, fan-outs, forever-runs, an interrupt decided while the worker is dead
and a halt engaged before the kill and lifted after it."""

from __future__ import annotations

import psutil
import pytest

from loops.models import LoopRun
from oversight.services import interrupts
from tests.conftest import wait_for
from tests.faults.conftest import (
    check_invariants,
    halt_runs,
    new_worker,
    start_interrupt,
    start_mix,
    stop_all,
    user,
)

# The workers must see committed rows.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("declared")]


def _in_a_call_of(worker) -> bool:
    """A call of one of the worker's pool processes is in flight (lease host:pid:thread)."""
    pids = {f":{p.pid}:" for p in psutil.Process(worker.process.pid).children()}
    holders = (
        LoopRun.objects.filter(iterations__contributions__status="running")
        .exclude(lease_worker="")
        .values_list("lease_worker", flat=True)
    )
    return any(pid in holder for holder in holders for pid in pids)


def test_nothing_is_lost_when_a_worker_is_killed_mid_step(workers):
    operator, admin = user("otto", "operator"), user("ada", "admin")
    doomed = new_worker(workers, "doomed")
    interrupted, interrupt = start_interrupt()
    mix = start_mix(slow=8, stacks=3, fanouts=2, forever=4, halted=2)
    mix.interrupts.append(interrupted)
    mix.ending.append(interrupted)
    mix.expected[interrupted] = "succeeded"  # rejected: the doser proposes 900 mg, under the limit
    engaged = halt_runs(operator, mix.halted)
    try:
        wait_for(lambda: _in_a_call_of(doomed), 60, interval=0.02)
        doomed.kill()
        # While no worker lives: the decision commits; its step waits in Redis.
        interrupts.interrupt_decide(
            interrupt_id=interrupt.pk, actor=operator, decision="reject", comment="too much"
        )
        new_worker(workers, "rescuer")

        check_invariants(mix, halts_held=engaged, lifter=admin, timeout=90)
    finally:
        stop_all([*mix.roots, interrupted])
