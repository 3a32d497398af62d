"""The operators' terminal commands (DESIGN.md section 5): halt, lift, decide, reset-breaker,
and what status shows of them. Each acts as --user, with the API's permission check, through
the one service the API calls."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from io import StringIO
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from loops.declare import Escalate
from loops.models import Blueprint, Domain, LoopRun
from loops.services import run_start
from loops.trace import Trace
from oversight.models import AuditEvent, CircuitBreaker, Halt, Interrupt
from oversight.services.interrupts import interrupt_raise
from tests.conftest import ROOT, person

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State
ISO_MICROSECONDS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00"


# The personas of tests/conftest.py, by the names this module's tests call them.


@pytest.fixture
def ada(admin):
    return admin


@pytest.fixture
def bob(roles):
    """A second admin (a global halt's lift needs two)."""
    return person("bob", "admin")


@pytest.fixture
def otto(operator):
    return operator


@pytest.fixture
def vera(viewer):
    return viewer


def _call(name: str, *args: str) -> str:
    out = StringIO()
    call_command(name, *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def _start() -> LoopRun:
    return run_start(domain="quay", blueprint="quay-main", input={})


def _interrupt(run: LoopRun) -> Interrupt:
    """A policy stops the run for a human, as the engine does it: in the run's transaction."""
    with transaction.atomic():
        locked = LoopRun.objects.select_for_update().get(pk=run.pk)
        trace = Trace(locked.root_id)
        interrupt = interrupt_raise(
            run=locked,
            trace=trace,
            source=Interrupt.Source.POLICY,
            reason="the crane load is over its limit",
            policy=Escalate(),
            proposal={"tonnes": 12},
            proposal_schema={"type": "object", "required": ["tonnes"]},
        )
        trace.write()
        return interrupt


def _quay() -> Domain:
    return Domain.objects.get(slug="quay")


def _breaker(**fields) -> CircuitBreaker:
    return CircuitBreaker.objects.create(
        name="quay-costs",
        scope=CircuitBreaker.Scope.DOMAIN,
        domain=_quay(),
        metric=CircuitBreaker.Metric.COST_WINDOW,
        threshold=5,
        **fields,
    )


def _audit(verb: str, target) -> AuditEvent:
    return AuditEvent.objects.get(verb=verb, target_id=str(target.pk))


# --- halt -----------------------------------------------------------------------------------


def test_it_halts_a_domain_and_parks_its_running_runs(otto):
    runs = [_start(), _start()]

    out = _call("halt", "--scope", "domain:quay", "--reason", "a spill", "--user", "otto")

    halt = Halt.objects.get()
    assert out.strip() == (
        f"Halt {halt.pk} of domain:quay engaged at "
        f"{halt.created_at.isoformat(timespec='microseconds')}; 2 runs parked."
    )
    assert re.search(f"engaged at {ISO_MICROSECONDS};", out)
    for run in runs:
        run.refresh_from_db()
        assert (run.state, run.prior_state) == (State.HALTED, State.RUNNING)
    event = _audit("halt.engaged", halt)
    assert (event.actor, event.note, event.data) == (otto, "a spill", {"parked": 2})


def test_it_says_when_the_scope_was_already_halted(otto):
    _call("halt", "--scope", "domain:quay", "--reason", "a spill", "--user", "otto")

    out = _call("halt", "--scope", "domain:quay", "--reason", "again", "--user", "otto")

    halt = Halt.objects.get()
    assert out.startswith(f"domain:quay was already halted: halt {halt.pk} by otto at ")
    assert "(a spill)" in out and "Nothing changed." in out
    assert AuditEvent.objects.filter(verb="halt.engaged").count() == 1


def test_it_needs_an_admin_for_a_global_halt(otto, ada):
    with pytest.raises(CommandError, match=re.escape("This needs the admin role.")):
        _call("halt", "--scope", "global", "--reason", "storm", "--user", "otto")
    assert not Halt.objects.exists()

    out = _call("halt", "--scope", " global", "--reason", "storm", "--user", "ada")

    halt = Halt.objects.get()
    assert (halt.scope, halt.created_by) == ("global", ada)
    assert out.startswith(f"Halt {halt.pk} of global engaged at ")
    assert _audit("halt.engaged", halt).actor == ada


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        ("domain:nowhere", "There is no domain 'nowhere'."),
        ("run:999999", "There is no run 999999."),
        ("everything", "'everything' is not a halt scope; use global, domain:<slug> or run:<id>."),
    ],
)
def test_it_passes_on_the_services_refusal_of_a_scope(otto, scope, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        _call("halt", "--scope", scope, "--reason", "why", "--user", "otto")

    assert not Halt.objects.exists()
    assert not AuditEvent.objects.filter(verb__startswith="halt.").exists()


# --- lift -----------------------------------------------------------------------------------


def test_it_lifts_a_global_halt_once_a_second_admin_confirms(ada, bob):
    run = _start()
    _call("halt", "--scope", "global", "--reason", "storm", "--user", "ada")
    halt = Halt.objects.get()

    asked = _call("lift", str(halt.pk), "--reason", "storm over", "--user", "ada")

    halt.refresh_from_db()
    assert halt.is_active and halt.lift_requested_by == ada
    assert asked.startswith(f"ada asked to lift the global halt {halt.pk} at ")
    assert "a different admin" in asked
    assert _audit("halt.lift_requested", halt).actor == ada

    with pytest.raises(CommandError, match="a different admin must confirm it"):
        _call("lift", str(halt.pk), "--reason", "still over", "--user", "ada")
    halt.refresh_from_db()
    assert halt.is_active
    run.refresh_from_db()
    assert run.state == State.HALTED

    lifted = _call("lift", str(halt.pk), "--reason", "agreed", "--user", "bob")

    halt.refresh_from_db()
    run.refresh_from_db()
    assert not halt.is_active and (halt.lifted_by, halt.confirmed_by) == (ada, bob)
    assert f"The global halt {halt.pk} is lifted now" in lifted
    assert "asked by ada, confirmed by bob" in lifted
    assert run.state == State.RUNNING
    assert _audit("halt.lifted", halt).actor == bob


def test_it_lifts_a_domain_halt_at_once_for_an_admin_only(otto, ada):
    run = _start()
    _call("halt", "--scope", "domain:quay", "--reason", "a spill", "--user", "otto")
    halt = Halt.objects.get()

    with pytest.raises(CommandError, match=re.escape("This needs the admin role.")):
        _call("lift", str(halt.pk), "--reason", "mopped", "--user", "otto")
    out = _call("lift", str(halt.pk), "--reason", "mopped", "--user", "ada")

    halt.refresh_from_db()
    run.refresh_from_db()
    assert out.startswith(f"Halt {halt.pk} of domain:quay is lifted now at ")
    assert (halt.is_active, halt.lifted_by, run.state) == (False, ada, State.RUNNING)
    assert _audit("halt.lifted", halt).actor == ada

    with pytest.raises(CommandError, match=f"Halt {halt.pk} was already lifted by ada"):
        _call("lift", str(halt.pk), "--reason", "again", "--user", "ada")


# --- decide ---------------------------------------------------------------------------------


def test_it_decides_an_interrupt_with_a_payload(otto):
    interrupt = _interrupt(_start())

    out = _call(
        "decide", str(interrupt.pk), "modify", "--payload", '{"tonnes": 8}',
        "--comment", "lighter", "--user", "otto",
    )  # fmt: skip

    interrupt.refresh_from_db()
    assert (
        out.strip()
        == f"Interrupt {interrupt.pk} modified by otto; run {interrupt.run_id} is running."
    )
    assert (interrupt.status, interrupt.payload) == (Interrupt.Status.DECIDED, {"tonnes": 8})
    assert interrupt.decided_by == otto
    event = _audit("interrupt.modified", interrupt)
    assert (event.actor, event.note) == (otto, "lighter")


def test_it_refuses_a_payload_that_is_not_json(otto):
    interrupt = _interrupt(_start())

    with pytest.raises(CommandError, match="--payload is not valid JSON: Expecting"):
        _call("decide", str(interrupt.pk), "modify", "--payload", "{tonnes: 8}", "--user", "otto")

    interrupt.refresh_from_db()
    assert interrupt.status == Interrupt.Status.PENDING and interrupt.run.state == State.INTERRUPTED
    assert not AuditEvent.objects.filter(verb="interrupt.modified").exists()


def test_it_passes_on_the_services_refusals_of_a_decision(otto):
    interrupt = _interrupt(_start())

    with pytest.raises(CommandError, match="A rejection needs a comment saying why"):
        _call("decide", str(interrupt.pk), "reject", "--user", "otto")
    _call("decide", str(interrupt.pk), "approve", "--user", "otto")
    with pytest.raises(CommandError, match=f"Interrupt {interrupt.pk} was already decided by otto"):
        _call("decide", str(interrupt.pk), "reject", "--comment", "no", "--user", "otto")

    interrupt.refresh_from_db()
    assert interrupt.decision == Interrupt.Decision.APPROVE
    assert _audit("interrupt.approved", interrupt).actor == otto
    assert not AuditEvent.objects.filter(verb="interrupt.rejected").exists()


# --- reset-breaker --------------------------------------------------------------------------


def test_it_resets_an_open_breaker_by_name(otto):
    breaker = _breaker(
        state=CircuitBreaker.State.OPEN, opened_at=timezone.now(), last_reason="dear"
    )

    out = _call("reset-breaker", "quay-costs", "--reason", "budget raised", "--user", "otto")

    breaker.refresh_from_db()
    assert breaker.state == CircuitBreaker.State.CLOSED
    assert out.strip() == "Breaker quay-costs (domain Quay) is closed; what it paused goes on."
    event = _audit("breaker.reset", breaker)
    assert (event.actor, event.note) == (otto, "budget raised")


def test_it_forces_a_breaker_open_by_id(otto):
    breaker = _breaker()

    out = _call(
        "reset-breaker", str(breaker.pk), "--force-open", "--reason", "stop", "--user", "otto"
    )

    breaker.refresh_from_db()
    assert (breaker.state, breaker.forced) == (CircuitBreaker.State.OPEN, True)
    assert "is forced open until someone resets it" in out
    assert _audit("breaker.forced_open", breaker).actor == otto


@pytest.mark.parametrize("reason", [(), ("--reason", ""), ("--reason", "  ")])
def test_it_needs_a_reason_to_reset_a_breaker(otto, reason):
    breaker = _breaker(state=CircuitBreaker.State.OPEN, opened_at=timezone.now())

    with pytest.raises(CommandError, match="reason"):
        _call("reset-breaker", "quay-costs", *reason, "--user", "otto")

    breaker.refresh_from_db()
    assert breaker.state == CircuitBreaker.State.OPEN
    assert not AuditEvent.objects.exists()


def test_it_says_when_a_breaker_is_already_closed(otto):
    _breaker()

    with pytest.raises(CommandError, match=re.escape("Breaker quay-costs is already closed.")):
        _call("reset-breaker", "quay-costs", "--reason", "why not", "--user", "otto")


# --- who may act ----------------------------------------------------------------------------


def _each_command() -> list[tuple[str, ...]]:
    interrupt = _interrupt(_start())
    halt = Halt.objects.create(scope="domain:quay", kind="domain", domain=_quay(), reason="x")
    _breaker(state=CircuitBreaker.State.OPEN, opened_at=timezone.now())
    return [
        ("halt", "--scope", "run:1", "--reason", "why"),
        ("lift", str(halt.pk), "--reason", "why"),
        ("decide", str(interrupt.pk), "approve"),
        ("reset-breaker", "quay-costs", "--reason", "why"),
    ]


def test_it_refuses_unknown_and_inactive_users_and_viewers(django_user_model, vera, otto):
    django_user_model.objects.create_user("gone", is_active=False)
    commands = _each_command()
    before = AuditEvent.objects.count()

    for command in commands:
        with pytest.raises(
            CommandError, match=re.escape("There is no active user 'nobody'; name the console user")
        ):
            _call(*command, "--user", "nobody")
        with pytest.raises(CommandError, match=re.escape("There is no active user 'gone';")):
            _call(*command, "--user", "gone")
        role = "admin" if command[0] == "lift" else "operator"
        with pytest.raises(CommandError, match=re.escape(f"This needs the {role} role.")):
            _call(*command, "--user", "vera")
        if command[0] == "lift":
            with pytest.raises(CommandError, match=re.escape("This needs the admin role.")):
                _call(*command, "--user", "otto")

    assert AuditEvent.objects.count() == before
    assert Halt.objects.get().is_active
    assert Interrupt.objects.get().is_pending
    assert CircuitBreaker.objects.get(name="quay-costs").state == CircuitBreaker.State.OPEN


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (("lift", "999999", "--reason", "why", "--user", "ada"), "There is no halt 999999."),
        (("decide", "999999", "approve", "--user", "ada"), "There is no interrupt 999999."),
        (
            ("reset-breaker", "999999", "--reason", "why", "--user", "ada"),
            "There is no breaker '999999'.",
        ),
    ],
)
def test_it_names_an_unknown_id(ada, command, message):
    with pytest.raises(CommandError, match=re.escape(message)):
        _call(*command)


def test_it_acts_as_console_user_or_the_login_name_without_user(otto, monkeypatch):
    monkeypatch.setenv("CONSOLE_USER", "nobody-here")
    with pytest.raises(CommandError, match=r"'nobody-here'; name the console user .* --user"):
        _call("halt", "--scope", "domain:quay", "--reason", "why")
    assert not Halt.objects.exists()

    monkeypatch.setenv("CONSOLE_USER", "otto")  # DESIGN.md's example line, as otto
    _call("halt", "--scope", "domain:quay", "--reason", "why")

    assert Halt.objects.get().created_by == otto


# --- status ---------------------------------------------------------------------------------


def test_it_shows_active_halts_pending_interrupts_and_open_breakers(ada, otto):
    interrupt = _interrupt(_start())
    _call("halt", "--scope", "global", "--reason", "storm at sea", "--user", "ada")
    halt = Halt.objects.get()
    _call("lift", str(halt.pk), "--reason", "calm", "--user", "ada")
    _breaker(state=CircuitBreaker.State.OPEN, opened_at=timezone.now(), last_reason="too dear")
    CircuitBreaker.objects.create(
        name="quay-quiet", scope="domain", domain=_quay(), metric="latency", threshold=9
    )

    out = _call("status")

    rows = [line.split() for line in out.splitlines()]
    iso = halt.created_at.isoformat(timespec="microseconds")
    assert [str(halt.pk), "global", iso, "ada", "ada", "storm", "at", "sea"] in rows
    deadline = interrupt.deadline_at.isoformat(timespec="microseconds")
    assert [str(interrupt.pk), str(interrupt.run_id), "warning", deadline,
            "the", "crane", "load", "is", "over", "its", "limit"] in rows  # fmt: skip
    assert ["quay-costs", "domain", "Quay", "open", "too", "dear"] in rows
    assert "quay-quiet" not in out
    assert "quay " in out  # the domain lines are still there


def test_it_says_when_nothing_needs_a_person():
    out = _call("status")

    assert "No halt is active." in out
    assert "No interrupt is pending." in out
    assert "Every breaker is closed." in out


# --- a real terminal ------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_halts_from_a_terminal(otto, vera):
    """python manage.py halt as its own process, against the test database."""
    quay = _quay()
    run = LoopRun.objects.create(
        blueprint=Blueprint.objects.get(name="quay-main"), domain=quay, state=State.RUNNING, depth=0
    )  # created, not started: no step is queued for a worker to take
    url = urlsplit(settings.DATABASE_URL)._replace(path=f"/{connection.settings_dict['NAME']}")
    env = {**os.environ, "DATABASE_URL": url.geturl(), "DJANGO_SETTINGS_MODULE": "tests.settings"}

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "manage.py", *args]
        return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)

    refused = manage("halt", "--scope", "domain:quay", "--reason", "spill", "--user", "vera")
    done = manage("halt", "--scope", "domain:quay", "--reason", "spill", "--user", "otto")

    assert refused.returncode == 1
    assert "CommandError: This needs the operator role." in refused.stderr
    assert done.returncode == 0, done.stderr
    halt = Halt.objects.get()
    assert re.fullmatch(
        f"Halt {halt.pk} of domain:quay engaged at {ISO_MICROSECONDS}; 1 run parked.\n",
        done.stdout,
    )
    assert halt.created_at.isoformat(timespec="microseconds") in done.stdout
    run.refresh_from_db()
    assert run.state == State.HALTED
    assert _audit("halt.engaged", halt).actor == otto
