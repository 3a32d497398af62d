"""The emergency halt (DESIGN.md H1, CONCEPTS 42): in-process with the engine stepped here,
then on real workers, with a worker killed and Redis restarted under a halt."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from loops import engine, services
from loops.declare import BLUEPRINTS
from loops.models import Agent, Blueprint, Contribution, Domain, Event, Iteration, LoopRun
from oversight.models import Alert, AuditEvent, Halt
from oversight.selectors import halt_in_flight_count
from oversight.services import halts
from tests.conftest import person, start_worker, wait_for
from tests.oversight import decl_halts

State = LoopRun.State
# What a step writes when it starts work: none may be later than a halt's created_at.
STARTS = ["iteration.broadcast", "bid.received", "selection.made", "agent.call.requested"]


pytestmark = pytest.mark.usefixtures("declared")


def _user(name: str, role: str):
    return person(name, role, email=f"{name}@example.org")


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _start(blueprint: str = "depot-loop", domain: str = "depot") -> LoopRun:
    return services.run_start(domain=domain, blueprint=blueprint, input={})


def _step_all(*runs: LoopRun) -> None:
    for run in runs:
        for pk in LoopRun.objects.filter(root_id=run.root_id, state=State.RUNNING).values_list(
            "pk", flat=True
        ):
            engine.advance(run_id=pk)


def _starts_after(moment, domain: str = "depot") -> list:
    """Every trace entry, iteration or call in the domain that started after moment."""
    return [
        *Event.objects.filter(run__domain__slug=domain, type__in=STARTS, ts__gt=moment),
        *Iteration.objects.filter(run__domain__slug=domain, started_at__gt=moment),
        *Contribution.objects.filter(iteration__run__domain__slug=domain, started_at__gt=moment),
    ]


# --- In-process: the engine stepped here -----------------------------------------------


@pytest.mark.django_db
def test_it_parks_every_run_in_scope_keeping_its_prior_state():
    admin = _user("ada", "admin")
    running, paused, stack = _start(), _start(), _start("depot-stack")
    _step_all(running, paused, stack)
    services.run_pause(run_id=paused.pk, actor=admin)
    child = LoopRun.objects.get(parent=stack)
    elsewhere = services.run_start(domain="lab", blueprint="lab-main", input={"x": 2})

    halt, created = halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")

    states = {
        r.pk: (r.state, r.prior_state)
        for r in LoopRun.objects.filter(pk__in=[running.pk, paused.pk, stack.pk, child.pk])
    }
    assert created and halt.parked == 4
    assert states == {
        running.pk: ("halted", "running"),
        paused.pk: ("halted", "paused"),
        stack.pk: ("halted", "waiting"),
        child.pk: ("halted", "running"),
    }
    assert LoopRun.objects.get(pk=elsewhere.pk).state == "running"
    assert Event.objects.filter(type="run.halted", payload__halt=halt.pk).count() == 4
    audit = AuditEvent.objects.get(verb="halt.engaged")
    assert (audit.actor, audit.note, audit.data) == (admin, "drill", {"parked": 4})
    assert Alert.objects.filter(kind="halt.engaged", target_id=str(halt.pk)).exists()


@pytest.mark.django_db
def test_it_takes_no_step_for_a_halted_run_and_steps_again_after_the_lift():
    admin = _user("ada", "admin")
    run = _start()
    _step_all(run)
    iterations = run.iterations.count()
    halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")

    for _ in range(3):
        engine.advance(run_id=run.pk)  # what queued tasks would do: nothing

    assert run.iterations.count() == iterations
    assert not _starts_after(halt.created_at)

    halts.halt_lift(halt_id=halt.pk, actor=admin, reason="drill over")
    engine.advance(run_id=run.pk)

    run.refresh_from_db()
    assert run.state == "running" and run.prior_state == ""
    assert run.iterations.count() == iterations + 1


@pytest.mark.django_db
def test_it_parks_a_run_started_as_the_halt_committed_at_its_first_step():
    """A start that read no halt yet and committed after the halt's parking: the gate in
    the engine finds the halt and parks the run before it takes a step."""
    admin = _user("ada", "admin")
    halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")
    with transaction.atomic():  # what the racing start did, past its halt check
        spec = BLUEPRINTS["depot-loop"]
        bp = Blueprint.objects.get(name="depot-loop")
        racer = services.create_run(
            spec, bp, Domain.objects.get(slug="depot"), input={}, parent=None
        )

    engine.advance(run_id=racer.pk)

    racer.refresh_from_db()
    assert (racer.state, racer.prior_state) == ("halted", "running")
    assert racer.iterations.count() == 0
    halts.halt_lift(halt_id=halt.pk, actor=admin, reason="drill over")
    assert LoopRun.objects.get(pk=racer.pk).state == "running"


@pytest.mark.django_db
def test_it_halts_a_run_with_its_whole_subtree_and_nothing_else():
    operator = _user("otto", "operator")
    stack, other = _start("depot-stack"), _start()
    _step_all(stack, other)
    child = LoopRun.objects.get(parent=stack)

    halt, _ = halts.halt_engage(actor=operator, scope=f"run:{stack.pk}", reason="odd output")

    assert halt.parked == 2
    assert set(LoopRun.objects.filter(state="halted").values_list("pk", flat=True)) == {
        stack.pk,
        child.pk,
    }
    assert LoopRun.objects.get(pk=other.pk).state == "running"


@pytest.mark.django_db
def test_it_keeps_runs_halted_while_another_active_halt_covers_them():
    admin = _user("ada", "admin")
    stack, other = _start("depot-stack"), _start()
    _step_all(stack, other)
    domain_halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")
    run_halt, _ = halts.halt_engage(actor=admin, scope=f"run:{stack.pk}", reason="odd output")

    halts.halt_lift(halt_id=domain_halt.pk, actor=admin, reason="drill over")

    assert LoopRun.objects.get(pk=other.pk).state == "running"
    assert set(LoopRun.objects.filter(state="halted").values_list("pk", flat=True)) == {
        stack.pk,
        LoopRun.objects.get(parent=stack).pk,
    }
    halts.halt_lift(halt_id=run_halt.pk, actor=admin, reason="checked")
    assert LoopRun.objects.get(pk=stack.pk).state == "waiting"


@pytest.mark.django_db(transaction=True)
def test_it_holds_the_result_of_a_call_in_flight_and_merges_it_after_the_lift():
    admin = _user("ada", "admin")
    with transaction.atomic():
        # Leased to "elsewhere" from its first commit, so a worker of this session cannot
        # take it; the step below is this process's, an hour later on the lease's clock.
        run = services.create_run(
            BLUEPRINTS["depot-held"],
            Blueprint.objects.get(name="depot-held"),
            Domain.objects.get(slug="depot"),
            input={},
            parent=None,
        )
        LoopRun.objects.filter(pk=run.pk).update(
            lease_worker="elsewhere", lease_expires_at=timezone.now() + timedelta(hours=1)
        )
    decl_halts.CALLING.clear()
    decl_halts.GATE.clear()
    later = timezone.now() + timedelta(hours=2)
    stepping = threading.Thread(
        target=lambda: (engine.advance(run_id=run.pk, now=later), connection.close())
    )
    stepping.start()
    wait_for(lambda: decl_halts.CALLING.is_set(), timeout=10)  # the agent is working

    halt, _ = halts.halt_engage(actor=admin, scope=f"run:{run.pk}", reason="stop now")
    in_flight = _client(admin).get(f"/api/v1/halts/{halt.pk}").json()["in_flight"]
    counted = halt_in_flight_count(halt)  # what the banner on every page says, in one COUNT
    decl_halts.GATE.set()  # the call answers after the halt committed
    stepping.join(10)

    contribution = Contribution.objects.get(iteration__run=run)
    assert [(c["run"], c["agent"], c["status"]) for c in in_flight] == [
        (run.pk, "holder", "running")
    ]  # what the operator sees still working after pressing halt
    assert counted == len(in_flight)
    assert contribution.held and contribution.status == "completed"
    assert contribution.started_at < halt.created_at
    assert run.iterations.get().status == "executing"  # nothing merged or decided
    assert LoopRun.objects.get(pk=run.pk).state == "halted"

    halts.halt_lift(halt_id=halt.pk, actor=admin, reason="safe")
    engine.advance(run_id=run.pk, now=later)  # or a worker of this session does it

    run = wait_for(lambda: LoopRun.objects.filter(pk=run.pk, state="succeeded").first())
    assert run.result == {"held": "result"}


# --- The API ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_it_answers_423_to_a_new_run_in_a_halted_scope():
    operator, admin = _user("otto", "operator"), _user("ada", "admin")
    halts.halt_engage(actor=operator, scope="domain:depot", reason="drill")
    client = _client(operator)
    body = {"blueprint": "depot-loop", "input": {}}

    refused = client.post("/api/v1/domains/depot/runs", body, content_type="application/json")
    started = client.post(
        "/api/v1/domains/lab/runs", {"blueprint": "lab-main"}, content_type="application/json"
    )
    halts.halt_engage(actor=admin, scope="global", reason="everything")
    refused_too = client.post(
        "/api/v1/domains/lab/runs", {"blueprint": "lab-main"}, content_type="application/json"
    )

    assert refused.status_code == 423 and refused.json()["error"] == "halted"
    assert "domain:depot is halted" in refused.json()["detail"]
    assert started.status_code == 201
    assert refused_too.status_code == 423
    assert not LoopRun.objects.filter(domain__slug="depot").exists()


@pytest.mark.django_db
def test_it_halts_through_the_api_with_the_commit_time_and_answers_a_second_press():
    operator = _user("otto", "operator")
    run = _start()
    client = _client(operator)

    first = client.post(
        "/api/v1/halts", {"scope": "domain:depot", "reason": "drill"}, "application/json"
    )
    again = client.post(
        "/api/v1/halts", {"scope": " domain:depot", "reason": "again"}, "application/json"
    )

    assert first.status_code == 201 and again.status_code == 200
    body = first.json()
    assert body["id"] == again.json()["id"] and body["scope"] == "domain:depot"
    halt = Halt.objects.get()
    assert body["created_at"] == halt.created_at.isoformat(timespec="microseconds")
    assert LoopRun.objects.get(pk=run.pk).updated_at <= halt.created_at
    listed = client.get("/api/v1/halts?active=true").json()
    assert [h["id"] for h in listed["items"]] == [halt.pk]
    assert client.get("/api/v1/health").json()["halts"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"scope": "everything", "reason": "x"}, 400, "invalid_scope"),
        ({"scope": "domain:", "reason": "x"}, 400, "invalid_scope"),
        ({"scope": "run:abc", "reason": "x"}, 400, "invalid_scope"),
        ({"scope": "domain:nowhere", "reason": "x"}, 404, "unknown_domain"),
        ({"scope": "run:999999", "reason": "x"}, 404, "unknown_run"),
        ({"scope": "domain:depot", "reason": ""}, 400, "invalid_request"),
        ({"scope": "domain:depot"}, 400, "invalid_request"),
    ],
)
def test_it_refuses_a_bad_halt_naming_what_is_wrong_and_changes_nothing(body, status, code):
    response = _client(_user("otto", "operator")).post("/api/v1/halts", body, "application/json")

    assert response.status_code == status
    assert response.json()["error"] == code and response.json()["detail"]
    assert not Halt.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_it_needs_an_admin_for_a_global_halt_and_two_admins_to_lift_it():
    operator, ada, bob = _user("otto", "operator"), _user("ada", "admin"), _user("bob", "admin")
    run = _start()
    _step_all(run)
    body = {"scope": "global", "reason": "incident"}

    assert _client(operator).post("/api/v1/halts", body, "application/json").status_code == 403
    halt_id = _client(ada).post("/api/v1/halts", body, "application/json").json()["id"]
    lift = f"/api/v1/halts/{halt_id}/lift"
    by_operator = _client(operator).post(lift, {"reason": "fixed"}, "application/json")
    asked = _client(ada).post(lift, {"reason": "fixed"}, "application/json")
    asked_again = _client(ada).post(lift, {"reason": "really"}, "application/json")
    assert LoopRun.objects.get(pk=run.pk).state == "halted"
    confirmed = _client(bob).post(lift, {"reason": "checked the logs"}, "application/json")
    after = _client(bob).post(lift, {"reason": "again"}, "application/json")

    assert by_operator.status_code == 403
    assert asked.status_code == 202 and asked.json()["lift_requested_by"] == "ada"
    assert asked_again.status_code == 409 and asked_again.json()["error"] == "needs_second_admin"
    assert confirmed.status_code == 200
    assert (confirmed.json()["lifted_by"], confirmed.json()["confirmed_by"]) == ("ada", "bob")
    assert after.status_code == 409 and "already lifted" in after.json()["detail"]
    assert LoopRun.objects.get(pk=run.pk).state == "running"
    verbs = list(AuditEvent.objects.order_by("id").values_list("verb", "actor_name"))
    assert verbs[-3:] == [
        ("halt.engaged", "ada"),
        ("halt.lift_requested", "ada"),
        ("halt.lifted", "bob"),
    ]


@pytest.mark.django_db
def test_it_lifts_only_with_a_reason():
    admin = _user("ada", "admin")
    halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")

    response = _client(admin).post(f"/api/v1/halts/{halt.pk}/lift", {}, "application/json")

    assert response.status_code == 400 and "reason" in response.json()["detail"]
    assert Halt.objects.get().is_active


# --- Real workers -------------------------------------------------------------------------


def _prior_states(halt: Halt) -> dict[int, str]:
    events = Event.objects.filter(type="run.halted", payload__halt=halt.pk)
    return {e.run_id: e.payload["prior_state"] for e in events}


def _cancel_depot() -> None:
    for pk in (
        LoopRun.objects.filter(domain__slug="depot", parent=None)
        .exclude(state__in=LoopRun.TERMINAL)
        .values_list("pk", flat=True)
    ):
        services.run_cancel(run_id=pk)


@pytest.mark.django_db(transaction=True)
def test_it_starts_no_step_after_the_commit_with_200_active_runs(celery_worker):
    """DESIGN.md H1 with 200 runs stepping on a real worker: from the halt's commit time on,
    no iteration, bid, selection or agent call starts in scope; every run is halted when
    the API answers; the lift puts each back in its prior state and they go on."""
    operator, admin = _user("otto", "operator"), _user("ada", "admin")
    runs = [_start() for _ in range(180)] + [_start("depot-stack") for _ in range(20)]
    wait_for(lambda: Iteration.objects.filter(run__domain__slug="depot").count() >= 400, 60)

    response = _client(operator).post(
        "/api/v1/halts", {"scope": "domain:depot", "reason": "drill"}, "application/json"
    )
    live = LoopRun.objects.filter(domain__slug="depot").exclude(state__in=LoopRun.TERMINAL)
    not_halted = live.exclude(state="halted").count()  # read right after the answer
    halt = Halt.objects.get(pk=response.json()["id"])
    threading.Event().wait(2)  # queued steps and calls in flight come and go meanwhile

    assert response.status_code == 201 and not_halted == 0
    assert halt.parked >= 200
    assert _starts_after(halt.created_at) == []
    prior = _prior_states(halt)
    assert set(prior.values()) <= {"running", "waiting"}

    lifted = _client(admin).post(
        f"/api/v1/halts/{halt.pk}/lift", {"reason": "ok"}, "application/json"
    )
    restored = {
        e.run_id: e.payload["state"]
        for e in Event.objects.filter(type="run.lifted", payload__halt=halt.pk)
    }

    assert lifted.status_code == 200
    assert restored == prior  # a waiting parent's child is still live, so it waits again
    wait_for(lambda: len(_starts_after(Halt.objects.get(pk=halt.pk).lifted_at)) > 100, 30)
    halts.halt_engage(actor=admin, scope="domain:depot", reason="end of test")
    assert {r.pk for r in runs} <= set(prior)


@pytest.mark.django_db(transaction=True)
def test_it_survives_killing_the_worker_and_restarting_redis():
    """The halt lives in PostgreSQL: a worker SIGKILLed mid-work, a Redis restart (which
    drops every connection and reloads its data) and a new worker with the reaper change
    nothing; the lift still resumes every run (DESIGN.md H1)."""
    operator, admin = _user("otto", "operator"), _user("ada", "admin")
    database = connection.settings_dict["NAME"]
    worker = start_worker(database, name="doomed", beat=True)
    try:
        runs = [_start() for _ in range(20)]
        wait_for(lambda: Iteration.objects.filter(run__in=runs).count() >= 40, 30)
        halt, _ = halts.halt_engage(actor=operator, scope="domain:depot", reason="incident")
        worker.kill()
        client = redis.Redis.from_url(settings.REDIS_URL)
        with contextlib.suppress(redis.ConnectionError):  # it closes our connection too
            client.execute_command("DEBUG", "RESTART")
        wait_for(lambda: _redis_answers(client), 30)
        worker = start_worker(database, name="reborn", beat=True)
        threading.Event().wait(7)  # more than one reaper sweep (every 5 s)

        assert set(
            LoopRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("state", flat=True)
        ) == {"halted"}
        assert _starts_after(halt.created_at) == []
        assert (
            _client(operator)
            .post("/api/v1/domains/depot/runs", {"blueprint": "depot-loop"}, "application/json")
            .status_code
            == 423
        )

        halts.halt_lift(halt_id=halt.pk, actor=admin, reason="recovered")
        lifted_at = Halt.objects.get(pk=halt.pk).lifted_at
        wait_for(
            lambda: (
                set(
                    Iteration.objects.filter(run__in=runs, started_at__gt=lifted_at).values_list(
                        "run_id", flat=True
                    )
                )
                == {r.pk for r in runs}
            ),
            30,
        )
        _cancel_depot()
    finally:
        worker.stop()


def _redis_answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scope", ["domain:depot", "run", "global"])
def test_it_gives_concurrent_presses_of_one_scope_the_same_halt(scope):
    admin = _user("ada", "admin")
    run = _start()
    scope = f"run:{run.pk}" if scope == "run" else scope
    barrier, answers = threading.Barrier(4), []

    def press() -> None:
        try:
            barrier.wait()
            answers.append(halts.halt_engage(actor=admin, scope=scope, reason="now"))
        finally:
            connection.close()

    pressers = [threading.Thread(target=press) for _ in range(4)]
    for presser in pressers:
        presser.start()
    for presser in pressers:
        presser.join(20)

    assert len(answers) == 4
    assert len({halt.pk for halt, _ in answers}) == 1
    assert sorted(created for _, created in answers) == [False, False, False, True]
    assert AuditEvent.objects.filter(verb="halt.engaged").count() == 1


@pytest.mark.django_db
def test_it_shows_the_active_halt_and_its_alert_on_every_page():
    viewer = _user("vera", "viewer")
    halt, _ = halts.halt_engage(
        actor=_user("otto", "operator"), scope="domain:depot", reason="drill"
    )

    page = _client(viewer).get("/").content.decode()

    assert 'id="halt-banner"' in page and "HALTED: domain:depot" in page and "drill" in page
    assert f'id="alert-{Alert.objects.get(kind="halt.engaged").pk}"' in page
    halts.halt_lift(halt_id=halt.pk, actor=_user("ada", "admin"), reason="over")
    assert "HALTED" not in _client(viewer).get("/").content.decode()


@pytest.mark.django_db
def test_it_records_a_decision_taken_during_a_halt_and_goes_on_after_the_lift():
    """An interrupted run parked by a halt: the decision is taken (people may decide while
    everything stands still), and the lift lets the run go on with it."""
    from oversight.models import Interrupt
    from oversight.services import interrupts

    operator, admin = _user("otto", "operator"), _user("ada", "admin")
    run = _start()
    _step_all(run)
    interrupt = interrupts.interrupt_raise_by_agent(
        agent=Agent.objects.get(name="counter"),
        run_id=run.pk,
        reason="check",
        proposal=None,
        severity="info",
    )
    halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")
    assert LoopRun.objects.get(pk=run.pk).prior_state == "interrupted"

    interrupts.interrupt_decide(interrupt_id=interrupt.pk, actor=operator, decision="approve")

    run.refresh_from_db()
    assert (run.state, run.prior_state) == ("halted", "running")
    assert Interrupt.objects.get(pk=interrupt.pk).decision == "approve"
    halts.halt_lift(halt_id=halt.pk, actor=admin, reason="over")
    iterations = run.iterations.count()
    engine.advance(run_id=run.pk)
    engine.advance(run_id=run.pk)
    run.refresh_from_db()
    assert run.state == "running" and run.iterations.count() > iterations
