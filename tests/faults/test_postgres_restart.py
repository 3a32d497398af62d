"""PostgreSQL crashes and restarts while runs iterate on a real worker, a decision's step is
on its way and a halt was just engaged: the worker's connections die mid-transaction, steps
are taken again (task retry, the reaper), and every invariant holds.

The restart: a SIGKILL to one server process. PostgreSQL then ends every other backend at
once (every connection drops, open transactions are lost), reinitialises its shared memory
and replays its WAL before it accepts connections again — a crash restart, harsher for the
data than `pg_ctl restart -m fast` (no checkpoint) though the postmaster itself lives on. A
real stop and start is not done here: the postmaster is the launcher's supervised child, and
a replacement started by this process would either die with it (and leave the browser tests
that bin/test runs next without a database) or outlive the launcher's ordered stop."""

from __future__ import annotations

import os
import signal
import time

import psutil
import psycopg
import pytest
from django.conf import settings
from django.db import connection

from loops import services
from loops.models import Contribution
from oversight.services import interrupts
from tests.conftest import wait_for
from tests.faults.conftest import (
    alive_db,
    check_invariants,
    halt_runs,
    iterations_of,
    new_worker,
    start_interrupt,
    start_mix,
    stop_all,
    user,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("declared")]


def _crash_postgres() -> None:
    """SIGKILL a backend of our own; its postmaster restarts every other one. Only the
    embedded server's (bin/test's): a pid from any other server may name a local stranger."""
    url = settings.DATABASES["default"]
    dsn = f"host={url['HOST']} port={url['PORT']} user={url['USER']} dbname={url['NAME']}"
    pidfile = settings.DATA_DIR / "postgres" / "postmaster.pid"
    if url["HOST"] != "127.0.0.1" or not pidfile.exists():
        pytest.skip("not the embedded PostgreSQL of bin/test, which this test may crash")
    postmaster = int(pidfile.read_text().split()[0])
    probe = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    (pid,) = probe.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
    if psutil.Process(pid).ppid() != postmaster:
        probe.close()
        pytest.skip("the database answering is not the embedded PostgreSQL's")
    os.kill(pid, signal.SIGKILL)
    try:
        wait_for(lambda: _dead(probe), 10, interval=0.05)
    finally:
        probe.close()


def _dead(probe: psycopg.Connection) -> bool:
    try:
        probe.execute("SELECT 1")
    except psycopg.Error:
        return True
    return False


def _worker_backends() -> list[tuple[int, float]]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, extract(epoch FROM backend_start) FROM pg_stat_activity"
            " WHERE application_name = 'test-worker'"
        )
        return list(cursor.fetchall())


def test_nothing_is_lost_when_postgres_restarts_mid_run(workers):
    operator, admin = user("otto", "operator"), user("ada", "admin")
    new_worker(workers, "steady")
    interrupted, interrupt = start_interrupt()
    mix = start_mix(slow=6, stacks=2, fanouts=1, forever=4, halted=2)
    mix.ending.append(interrupted)
    mix.expected[interrupted] = "succeeded"  # approved: the proposal is the result
    mix.interrupts.append(interrupted)
    try:
        wait_for(lambda: min(iterations_of(mix.forever).values()) >= 3, 60)
        engaged = halt_runs(operator, mix.halted)
        interrupts.interrupt_decide(interrupt_id=interrupt.pk, actor=operator, decision="approve")
        wait_for(lambda: Contribution.objects.filter(status="running").exists(), 30, interval=0.01)
        crashed_at = time.time()
        _crash_postgres()
        alive_db(60)  # this process's connection died too: Django reconnects on the next query

        after = services.run_start(domain="lab", blueprint="lab-slow", input={})
        mix.ending.append(after.pk)
        mix.expected[after.pk] = "succeeded"
        check_invariants(mix, halts_held=engaged, lifter=admin, timeout=90)
        # The worker works on connections opened after the crash, none from before.
        assert all(started > crashed_at for _, started in _worker_backends())
    finally:
        alive_db(60)  # up for the tests after this one
        stop_all([*mix.roots, interrupted])
