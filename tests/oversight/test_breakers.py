"""Circuit breakers (DESIGN.md H3, CONCEPTS 41) on the real database: the state machine
walked with a frozen clock, each metric, the one trial while half-open under concurrency,
the engine leaving a tripped agent out and pausing a tripped blueprint's runs, the operator
actions through the API, and once the whole pause and reset on a real worker.

The agents and breakers are the plant domain's (tests/oversight/decl_breakers.py).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from loops import engine, services
from loops.models import Agent, Blueprint, EventCounter, LoopRun
from oversight import gates
from oversight.models import Alert, AuditEvent, CircuitBreaker
from oversight.services.breakers import (
    Call,
    breaker_pause_guarded,
    breaker_record,
    breaker_reset,
    breaker_resume_guarded,
    breakers_half_open_due,
    breakers_record_calls,
)
from tests.conftest import agent_bearer, wait_for
from tests.oversight.decl_breakers import FLAKY

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared_breakers")]
State = CircuitBreaker.State
Run = LoopRun.State
S = timedelta(seconds=1)


# --- Helpers ------------------------------------------------------------------------------


def breaker(name: str) -> CircuitBreaker:
    return CircuitBreaker.objects.get(name=name)


def agent_id(name: str) -> int:
    return Agent.objects.get(domain__slug="plant", name=name).pk


def ok(**knobs) -> Call:
    return Call(agent_id=0, ok=True, **knobs)


def failed(**knobs) -> Call:
    return Call(agent_id=0, ok=False, **knobs)


def feed(name: str, *calls: Call, now) -> CircuitBreaker:
    """Record calls against the breaker as the engine does: the row locked, one transaction."""
    with transaction.atomic():
        row = CircuitBreaker.objects.select_for_update().get(name=name)
        for call in calls:
            breaker_record(row, call, now=now)
    return breaker(name)


def verbs(row: CircuitBreaker) -> list[str]:
    rows = AuditEvent.objects.filter(target_type="breaker", target_id=str(row.pk))
    return list(rows.order_by("at", "id").values_list("verb", flat=True))


def start(blueprint: str, **input) -> LoopRun:
    return services.run_start(domain="plant", blueprint=blueprint, input=input)


def drive(run: LoopRun, steps: int = 20) -> LoopRun:
    """Step the run in this process until it stops running."""
    for _ in range(steps):
        if not LoopRun.objects.filter(pk=run.pk, state=Run.RUNNING).exists():
            break
        engine.advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def audience(run: LoopRun, number: int) -> list[int]:
    return run.iterations.get(number=number).broadcast["audience"]


def bidders(run: LoopRun, number: int) -> set[str]:
    iteration = run.iterations.get(number=number)
    return set(iteration.bids.values_list("agent__name", flat=True))


def held_run(blueprint: str) -> LoopRun:
    """A running run no worker can step: another worker holds its lease for an hour. For
    tests on committed rows, where the session's worker would otherwise race them."""
    bp = Blueprint.objects.get(name=blueprint)
    run = LoopRun.objects.create(
        blueprint=bp,
        domain=bp.domain,
        state=Run.RUNNING,
        context={"input": {}},
        lease_worker="elsewhere:1:1",
        lease_expires_at=timezone.now() + timedelta(hours=1),
    )
    LoopRun.objects.filter(pk=run.pk).update(root=run.pk)
    run.root_id = run.pk
    EventCounter.objects.create(root=run)
    return run


def in_threads(count: int, work) -> list:
    """Call work(i) in count threads at once, each on its own database connection."""
    barrier, results = threading.Barrier(count), [None] * count

    def body(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# --- 1. The state machine with a frozen clock (CONCEPTS 41) --------------------------------


def test_it_walks_closed_open_half_open_closed_with_a_frozen_clock():
    t0 = timezone.now()
    run, other = start("plant-work"), start("plant-work")
    flaky = agent_id("flaky")
    name = "plant-flaky-failures"  # two consecutive failures, 30 s cooldown

    breakers_record_calls(run, [Call(flaky, ok=False)], now=t0)
    row = breaker(name)
    assert (row.state, row.failures) == (State.CLOSED, 1)  # not before the threshold
    assert verbs(row) == [] and not Alert.objects.exists()

    breakers_record_calls(run, [Call(flaky, ok=False)], now=t0 + S)
    row = breaker(name)
    assert row.state == State.OPEN  # exactly at the threshold
    assert (row.opened_at, row.retry_at) == (t0 + S, t0 + 31 * S)
    assert row.last_reason == "2 consecutive failed calls (threshold 2)"
    opened = AuditEvent.objects.get(target_type="breaker", verb="breaker.opened")
    assert (opened.actor_name, opened.actor_id, opened.data) == ("system", None, {"run": run.pk})
    assert (opened.before["state"], opened.after["state"]) == ("closed", "open")
    alert = Alert.objects.get()
    assert (alert.kind, alert.level, alert.target_id) == ("breaker.opened", "critical", str(row.pk))

    breakers_record_calls(run, [Call(flaky, ok=True)], now=t0 + 2 * S)  # began before it opened
    assert breakers_half_open_due(now=t0 + 30 * S) == 0
    assert breaker(name).state == State.OPEN  # still cooling down

    assert breakers_half_open_due(now=t0 + 31 * S) == 1
    row = breaker(name)
    assert (row.state, row.trial_at, row.trial_run_id) == (State.HALF_OPEN, None, None)
    assert flaky not in gates.agents_excluded(run)  # this broadcast carries the one trial
    assert flaky in gates.agents_excluded(other)  # the next one does not
    assert breaker(name).trial_run_id == run.pk

    breakers_record_calls(run, [Call(flaky, ok=True)], now=t0 + 32 * S)
    row = breaker(name)
    assert (row.state, row.failures, row.samples) == (State.CLOSED, 0, [])
    assert (row.retry_at, row.trial_run_id, row.last_reason) == (
        None,
        None,
        "the trial call succeeded",
    )
    assert verbs(row) == ["breaker.opened", "breaker.half_opened", "breaker.closed"]
    assert set(
        AuditEvent.objects.filter(target_type="breaker").values_list("actor_name", flat=True)
    ) == {"system"}
    assert Alert.objects.count() == 1
    assert gates.agents_excluded(other) == set()


def test_it_opens_again_on_a_failed_trial_and_moves_retry_at_on():
    t0 = timezone.now()
    name = "plant-flaky-failures"
    feed(name, failed(), failed(), now=t0)
    assert breakers_half_open_due(now=t0 + 30 * S) == 1
    assert breaker(name).state == State.HALF_OPEN

    row = feed(name, failed(), now=t0 + 40 * S)

    assert row.state == State.OPEN
    assert (row.opened_at, row.retry_at) == (t0 + 40 * S, t0 + 70 * S)  # from the failed trial
    assert row.last_reason == "the trial call failed"
    assert verbs(row) == ["breaker.opened", "breaker.half_opened", "breaker.opened"]
    assert Alert.objects.filter(kind="breaker.opened").count() == 2
    assert breakers_half_open_due(now=t0 + 69 * S) == 0
    assert breakers_half_open_due(now=t0 + 70 * S) == 1


def test_it_gives_the_trial_out_again_when_it_never_reports():
    t0 = timezone.now()
    name = "plant-flaky-failures"
    run, other = start("plant-work"), start("plant-work")
    feed(name, failed(), failed(), now=t0)
    breakers_half_open_due(now=t0 + 30 * S)
    assert agent_id("flaky") not in gates.agents_excluded(run)  # the trial; its worker dies
    taken = breaker(name).trial_at

    assert breakers_half_open_due(now=taken + 29 * S) == 0  # still waiting for it
    assert agent_id("flaky") in gates.agents_excluded(other)
    assert breakers_half_open_due(now=taken + 31 * S) == 1  # a cooldown later: given again
    assert agent_id("flaky") not in gates.agents_excluded(other)
    assert breaker(name).trial_run_id == other.pk


def test_it_judges_a_half_open_breaker_by_the_trial_runs_call_alone():
    t0, flaky = timezone.now(), agent_id("flaky")
    name = "plant-flaky-failures"
    trial, stale = start("plant-work"), start("plant-work")
    feed(name, failed(), failed(), now=t0)
    breakers_half_open_due(now=t0 + 30 * S)
    gates.agents_excluded(trial)  # the trial's broadcast

    # A call the other run had in flight since before the breaker opened ends now.
    breakers_record_calls(stale, [Call(flaky, ok=True)], now=t0 + 31 * S)
    assert breaker(name).state == State.HALF_OPEN

    breakers_record_calls(trial, [Call(flaky, ok=False)], now=t0 + 32 * S)
    assert breaker(name).state == State.OPEN


# --- 2. Exactly one trial while half-open ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_gives_the_one_trial_to_exactly_one_of_concurrent_broadcasts():
    t0 = timezone.now()
    name, flaky = "plant-flaky-failures", agent_id("flaky")
    runs = [held_run("plant-work") for _ in range(8)]
    feed(name, failed(), failed(), now=t0)
    breakers_half_open_due(now=t0 + 30 * S)

    excluded = in_threads(len(runs), lambda i: gates.agents_excluded(runs[i]))

    included = [run.pk for run, ex in zip(runs, excluded, strict=True) if flaky not in ex]
    assert len(included) == 1
    row = breaker(name)
    assert (row.state, row.trial_run_id) == (State.HALF_OPEN, included[0])
    assert row.trial_at is not None


@pytest.mark.django_db(transaction=True)
def test_it_resumes_exactly_one_paused_run_as_the_trial_of_a_blueprint_breaker():
    t0 = timezone.now()
    name = "plant-heat-temperature"
    runs = [held_run("plant-heat") for _ in range(4)]
    feed(name, ok(metrics={"temperature": 95.0}), now=t0)
    pk = breaker(name).pk
    breaker_pause_guarded(breaker_id=pk)  # a worker may do it too: the second finds none
    assert set(
        LoopRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("state", "paused_by")
    ) == {(Run.PAUSED, f"breaker:{pk}")}

    # Four sweeps race (two beats overlapping, say): one trial, one audit record.
    made = in_threads(4, lambda i: breakers_half_open_due(now=t0 + 30 * S))

    assert sum(made) == 1
    row = breaker(name)
    states = dict(LoopRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("pk", "state"))
    assert [run for run, state in states.items() if state == Run.RUNNING] == [row.trial_run_id]
    assert row.state == State.HALF_OPEN and row.trial_at == t0 + 30 * S
    for run in runs:
        run.refresh_from_db()
        if run.pk == row.trial_run_id:
            assert gates.stop_reason(run) is None
        else:
            assert (run.state, run.paused_by) == (Run.PAUSED, f"breaker:{pk}")
            assert gates.stop_reason(run) == ("breaker", pk)
    assert verbs(row).count("breaker.half_opened") == 1


# --- 3. Each metric ---------------------------------------------------------------------


def test_it_trips_on_consecutive_failures_and_a_success_starts_the_count_again():
    t0, name = timezone.now(), "plant-flaky-failures"

    assert feed(name, failed(), ok(), failed(), now=t0).state == State.CLOSED
    assert breaker(name).failures == 1
    assert feed(name, failed(), now=t0 + S).state == State.OPEN


def test_it_trips_on_the_error_rate_over_the_window_after_min_calls():
    t0, name = timezone.now(), "plant-sputter-errors"  # 50 % of at least 4 calls in 60 s

    assert feed(name, failed(), failed(), failed(), now=t0).state == State.CLOSED  # 3 < 4 calls
    # A minute on, those three fell out of the window: 1 of 1, then 1 of 2, 1 of 3 failed.
    assert feed(name, ok(), now=t0 + 61 * S).state == State.CLOSED
    assert len(breaker(name).samples) == 1
    assert feed(name, failed(), ok(), now=t0 + 62 * S).state == State.CLOSED

    row = feed(name, failed(), now=t0 + 63 * S)

    assert row.state == State.OPEN  # 2 of 4
    assert row.last_reason == "50% of 4 calls failed in 60 s (threshold 50%)"


def test_it_trips_on_the_cost_over_the_window():
    t0, name = timezone.now(), "plant-costly-spend"  # more than 1.0 in 60 s

    assert feed(name, ok(cost=0.4), now=t0).state == State.CLOSED
    assert feed(name, ok(cost=0.4), now=t0 + 10 * S).state == State.CLOSED
    assert feed(name, ok(cost=0.2), now=t0 + 20 * S).state == State.CLOSED  # 1.0 is the limit
    assert feed(name, ok(cost=0.3), now=t0 + 61 * S).state == State.CLOSED  # the first fell out

    row = feed(name, ok(cost=0.2), now=t0 + 62 * S)

    assert row.state == State.OPEN
    assert row.last_reason == "calls cost 1.1 in 60 s (limit 1)"


def test_it_trips_on_the_mean_latency_after_min_calls():
    t0, name = timezone.now(), "plant-slow-latency"  # mean over 250 ms, at least 3 calls

    assert feed(name, ok(latency_ms=900), ok(latency_ms=900), now=t0).state == State.CLOSED
    assert feed(name, ok(latency_ms=30), now=t0 + S).state == State.OPEN  # mean 610 ms

    breaker_reset(breaker_id=breaker(name).pk, actor=None, reason="faster disks")
    t1 = t0 + 100 * S
    calls = [ok(latency_ms=250), ok(latency_ms=200), ok(latency_ms=300)]
    assert feed(name, *calls, now=t1).state == State.CLOSED  # a mean of 250 is the limit
    assert feed(name, ok(latency_ms=251), now=t1 + S).state == State.OPEN


def test_it_trips_on_a_reported_value_over_the_limit():
    t0, name = timezone.now(), "plant-heat-temperature"  # temperature over 90

    assert feed(name, ok(metrics={"temperature": 90.0}), now=t0).state == State.CLOSED
    assert feed(name, ok(metrics={"pressure": 300.0}), ok(), now=t0).state == State.CLOSED
    assert feed(name, failed(), now=t0).state == State.CLOSED  # a failed call reports nothing

    row = feed(name, ok(metrics={"temperature": 93.5}), now=t0 + S)

    assert row.state == State.OPEN
    assert row.last_reason == "an agent reported temperature = 93.5 (limit 90)"


def test_it_feeds_a_call_to_the_breakers_of_its_agent_blueprint_and_domain_only():
    run = start("plant-work")
    t0 = timezone.now()

    breakers_record_calls(
        run, [Call(agent_id("flaky"), ok=False, cost=60.0), Call(agent_id("steady"), ok=True)], t0
    )
    breakers_record_calls(run, [Call(agent_id("steady"), ok=True, cost=50.0)], t0 + S)

    assert breaker("plant-flaky-failures").failures == 1
    assert len(breaker("plant-flaky-failures").samples) == 1  # not steady's call
    assert breaker("plant-costly-spend").samples == []  # another agent's
    assert breaker("plant-heat-temperature").samples == []  # another blueprint's
    domain = breaker("plant-budget")
    assert domain.state == State.OPEN  # 110 in the window, over 100
    assert gates.stop_reason(run) == ("breaker", domain.pk)


# --- 4. The engine -------------------------------------------------------------------------


def test_it_leaves_an_agent_whose_breaker_opened_out_of_the_next_broadcast(monkeypatch):
    monkeypatch.setitem(FLAKY, "fail", True)
    flaky, steady = agent_id("flaky"), agent_id("steady")

    run = drive(start("plant-work"))

    assert (run.state, run.exit_reason, run.iteration) == (Run.EXHAUSTED, "max_iterations", 4)
    assert [sorted(audience(run, n)) for n in (1, 2, 3, 4)] == [
        sorted([flaky, steady]),
        sorted([flaky, steady]),
        [steady],
        [steady],
    ]
    assert bidders(run, 2) == {"flaky", "steady"}
    assert bidders(run, 3) == bidders(run, 4) == {"steady"}
    row = breaker("plant-flaky-failures")
    assert row.state == State.OPEN
    assert AuditEvent.objects.get(verb="breaker.opened", target_id=str(row.pk)).data == {
        "run": run.pk
    }

    # After the cooldown one broadcast takes the flaky agent again, and it fails again.
    breakers_half_open_due(now=row.retry_at)
    second = drive(start("plant-work"))
    assert flaky in audience(second, 1) and flaky not in audience(second, 2)
    assert breaker("plant-flaky-failures").state == State.OPEN

    # The next trial succeeds: the breaker closes and the agent is back in every broadcast.
    monkeypatch.setitem(FLAKY, "fail", False)
    breakers_half_open_due(now=breaker("plant-flaky-failures").retry_at)
    third = drive(start("plant-work"))
    assert all(flaky in audience(third, n) for n in (1, 2, 3, 4))
    assert breaker("plant-flaky-failures").state == State.CLOSED
    assert verbs(row)[-2:] == ["breaker.half_opened", "breaker.closed"]


def test_it_pauses_a_tripped_blueprints_runs_and_a_reset_lets_them_finish(operator):
    waiting = [start("plant-heat"), start("plant-heat")]
    hot = drive(start("plant-heat", temperature=95.0))
    row = breaker("plant-heat-temperature")
    assert row.state == State.OPEN
    assert hot.state == Run.SUCCEEDED  # its own reading was taken; what comes next waits

    assert breaker_pause_guarded(breaker_id=row.pk) == 2
    assert breaker_pause_guarded(breaker_id=row.pk) == 0  # replayed: nothing more to pause
    for run in waiting:
        engine.advance(run_id=run.pk)  # the engine does not step them
        run.refresh_from_db()
        assert (run.state, run.paused_by, run.prior_state) == (
            Run.PAUSED,
            f"breaker:{row.pk}",
            Run.RUNNING,
        )
        assert not run.iterations.exists()
    late = start("plant-heat")  # started after the pause: the gate stops and parks it
    engine.advance(run_id=late.pk)
    late.refresh_from_db()
    assert (late.state, late.paused_by) == (Run.PAUSED, f"breaker:{row.pk}")
    assert not late.iterations.exists()

    breaker_reset(breaker_id=row.pk, actor=operator, reason="the sensor was recalibrated")

    for run in [*waiting, late]:
        run.refresh_from_db()
        assert (run.state, run.paused_by) == (Run.RUNNING, "")
        assert drive(run).state == Run.SUCCEEDED
    reset = AuditEvent.objects.get(verb="breaker.reset", target_id=str(row.pk))
    assert (reset.actor, reset.note) == (operator, "the sensor was recalibrated")


def test_it_lets_one_trial_run_through_and_resumes_the_rest_when_it_succeeds():
    hot = drive(start("plant-heat", temperature=95.0))
    runs = [start("plant-heat") for _ in range(3)]
    row = breaker("plant-heat-temperature")
    breaker_pause_guarded(breaker_id=row.pk)

    assert breakers_half_open_due(now=row.retry_at) == 1

    row.refresh_from_db()
    trial, *others = sorted(runs, key=lambda r: r.pk != row.trial_run_id)
    assert trial.pk == row.trial_run_id
    for run in others:
        engine.advance(run_id=run.pk)
        assert LoopRun.objects.get(pk=run.pk).state == Run.PAUSED
        assert not run.iterations.exists()
    assert drive(trial).state == Run.SUCCEEDED
    assert breaker(row.name).state == State.CLOSED  # the trial's call closed it
    assert breaker_resume_guarded(breaker_id=row.pk) == 2  # the task after commit
    assert [drive(run).state for run in others] == [Run.SUCCEEDED, Run.SUCCEEDED]
    assert hot.state == Run.SUCCEEDED
    assert verbs(row) == ["breaker.opened", "breaker.half_opened", "breaker.closed"]


def test_it_lets_no_run_but_the_trial_through_while_half_open_without_paused_runs():
    drive(start("plant-heat", temperature=95.0))  # it tripped the breaker and ended
    row = breaker("plant-heat-temperature")
    assert breakers_half_open_due(now=row.retry_at) == 1  # no paused run to try yet
    first, second = start("plant-heat"), start("plant-heat")

    for run in (first, second):
        engine.advance(run_id=run.pk)  # the gate stops both: neither is the trial
        run.refresh_from_db()
        assert (run.state, run.paused_by) == (Run.PAUSED, f"breaker:{row.pk}")

    assert breakers_half_open_due(now=row.retry_at) == 1  # the sweep picks one of them
    assert breaker(row.name).trial_run_id == first.pk
    assert drive(first).state == Run.SUCCEEDED
    assert breaker(row.name).state == State.CLOSED
    assert LoopRun.objects.get(pk=second.pk).state == Run.PAUSED  # until the resume task


def test_it_opens_again_when_the_trial_run_reports_a_value_over_the_limit():
    drive(start("plant-heat", temperature=95.0))
    trial = start("plant-heat", temperature=97.0)  # the lowest id: it gets the trial
    other = start("plant-heat")
    row = breaker("plant-heat-temperature")
    breaker_pause_guarded(breaker_id=row.pk)
    breakers_half_open_due(now=row.retry_at)

    drive(trial)

    row.refresh_from_db()
    assert row.state == State.OPEN and row.trial_run_id is None  # a hot reading is no success
    assert row.last_reason == "the trial reported temperature = 97 (limit 90)"
    assert breaker_pause_guarded(breaker_id=row.pk) == 0  # the trial run already ended
    other.refresh_from_db()
    assert (other.state, other.paused_by) == (Run.PAUSED, f"breaker:{row.pk}")


# --- 5. Operator actions through the API --------------------------------------------------


def _as(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _post(client: Client, path: str, body=None):
    data = "" if body is None else json.dumps(body)
    return client.post(path, data, content_type="application/json")


def _open(name: str = "plant-flaky-failures") -> CircuitBreaker:
    return feed(name, failed(), failed(), now=timezone.now())


def test_it_resets_an_open_breaker_with_the_operators_reason(operator):
    row = _open()

    response = _post(_as(operator), f"/api/v1/breakers/{row.pk}/reset", {"reason": "fixed"})

    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["state"], body["forced"], body["failures"]) == (
        row.pk,
        "closed",
        False,
        0,
    )
    reset = AuditEvent.objects.get(verb="breaker.reset")
    assert (reset.actor, reset.actor_name, reset.note) == (operator, "otto", "fixed")
    assert (reset.target_type, reset.target_id) == ("breaker", str(row.pk))
    assert (reset.before["state"], reset.after["state"]) == ("open", "closed")
    assert agent_id("flaky") not in gates.agents_excluded(start("plant-work"))


@pytest.mark.parametrize("reason", ["", "   ", None])
def test_it_refuses_a_reset_without_a_reason_and_changes_nothing(operator, reason):
    row = _open()
    audited = AuditEvent.objects.count()
    body = {} if reason is None else {"reason": reason}

    response = _post(_as(operator), f"/api/v1/breakers/{row.pk}/reset", body)

    assert response.status_code == 400
    assert response.json()["error"] in ("invalid_request", "reason_required")
    assert "reason" in response.json()["detail"]
    assert breaker(row.name).state == State.OPEN
    assert AuditEvent.objects.count() == audited


def test_it_answers_409_when_resetting_a_closed_breaker(operator):
    row = breaker("plant-flaky-failures")

    response = _post(_as(operator), f"/api/v1/breakers/{row.pk}/reset", {"reason": "why not"})

    assert response.status_code == 409
    assert response.json() == {
        "error": "wrong_state",
        "detail": "Breaker plant-flaky-failures is already closed.",
    }
    assert verbs(row) == []


def test_it_keeps_a_forced_breaker_open_past_the_cooldown_until_a_reset(operator):
    row = breaker("plant-flaky-failures")
    client = _as(operator)

    response = _post(client, f"/api/v1/breakers/{row.pk}/force-open", {"reason": "maintenance"})

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["forced"]) == ("open", True)
    forced = AuditEvent.objects.get(verb="breaker.forced_open")
    assert (forced.actor, forced.note) == (operator, "maintenance")
    assert Alert.objects.filter(kind="breaker.opened", target_id=str(row.pk)).exists()
    assert breakers_half_open_due(now=timezone.now() + timedelta(days=1)) == 0
    assert feed(row.name, ok(), now=timezone.now() + timedelta(days=1)).state == State.OPEN
    assert agent_id("flaky") in gates.agents_excluded(start("plant-work"))
    again = _post(client, f"/api/v1/breakers/{row.pk}/force-open", {"reason": "twice"})
    assert again.status_code == 409

    assert _post(client, f"/api/v1/breakers/{row.pk}/reset", {"reason": "done"}).status_code == 200

    row.refresh_from_db()
    assert (row.state, row.forced) == (State.CLOSED, False)


@pytest.mark.parametrize("action", ["reset", "force-open"])
def test_it_requires_the_operator_role(viewer, action):
    row = _open()
    audited = AuditEvent.objects.count()

    response = _post(_as(viewer), f"/api/v1/breakers/{row.pk}/{action}", {"reason": "me"})

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "This needs the operator role."}
    assert breaker(row.name).state == State.OPEN
    assert AuditEvent.objects.count() == audited


@pytest.mark.parametrize("action", ["reset", "force-open"])
def test_it_refuses_an_agent_token(action):
    row = _open()
    client = agent_bearer(Agent.objects.get(pk=agent_id("flaky")))

    response = _post(client, f"/api/v1/breakers/{row.pk}/{action}", {"reason": "let me out"})

    assert response.status_code == 403
    row.refresh_from_db()
    assert (row.state, row.forced) == (State.OPEN, False)


@pytest.mark.parametrize("action", ["reset", "force-open"])
def test_it_answers_404_for_an_unknown_breaker(operator, action):
    response = _post(_as(operator), f"/api/v1/breakers/{10**9}/{action}", {"reason": "x"})

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": f"There is no breaker {10**9}."}


def test_it_rejects_get_on_a_reset(operator):
    row = _open()

    assert _as(operator).get(f"/api/v1/breakers/{row.pk}/reset").status_code == 405


# --- 6. The list --------------------------------------------------------------------------


def test_it_lists_breakers_with_state_guards_and_last_reason(viewer):
    _open()
    feed("plant-heat-temperature", ok(metrics={"temperature": 99.0}), now=timezone.now())

    response = _as(viewer).get("/api/v1/breakers?limit=100")

    assert response.status_code == 200
    items = {item["name"]: item for item in response.json()["items"]}
    flaky, heat, budget = (
        items["plant-flaky-failures"],
        items["plant-heat-temperature"],
        items["plant-budget"],
    )
    assert (flaky["state"], flaky["guards"], flaky["metric"], flaky["threshold"]) == (
        "open",
        "agent plant/flaky",
        "consecutive_failures",
        2.0,
    )
    assert flaky["last_reason"] == "2 consecutive failed calls (threshold 2)"
    assert heat["guards"] == "blueprint plant-heat"
    assert heat["last_reason"] == "an agent reported temperature = 99 (limit 90)"
    assert (budget["state"], budget["guards"], budget["last_reason"]) == (
        "closed",
        "domain Plant",
        "",
    )
    assert flaky["retry_at"] is not None and flaky["forced"] is False
    open_only = _as(viewer).get("/api/v1/breakers?state=open").json()
    assert {item["name"] for item in open_only["items"]} == {
        "plant-flaky-failures",
        "plant-heat-temperature",
    }


# --- On a real worker ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_pauses_a_blueprints_runs_on_the_worker_and_resumes_them_after_a_reset(
    celery_worker, operator
):
    runs = [start("plant-line") for _ in range(3)]
    wait_for(lambda: all(LoopRun.objects.get(pk=r.pk).iteration >= 1 for r in runs))
    row = breaker("plant-line-stop")
    client = _as(operator)

    forced = _post(client, f"/api/v1/breakers/{row.pk}/force-open", {"reason": "jam on line 2"})
    assert forced.status_code == 200

    def paused():
        found = LoopRun.objects.filter(pk__in=[r.pk for r in runs])
        return all(r.state == Run.PAUSED for r in found) and list(found)

    for run in wait_for(paused):
        assert run.paused_by == f"breaker:{row.pk}"
        assert run.iteration < 20  # stopped midway
    stepped = dict(LoopRun.objects.filter(state=Run.PAUSED).values_list("pk", "iteration"))
    time.sleep(1.0)  # a worker that stepped them anyway would have opened iterations by now
    assert dict(LoopRun.objects.filter(pk__in=stepped).values_list("pk", "iteration")) == stepped
    assert set(LoopRun.objects.filter(pk__in=stepped).values_list("state", flat=True)) == {
        Run.PAUSED
    }

    reset = _post(client, f"/api/v1/breakers/{row.pk}/reset", {"reason": "jam cleared"})
    assert reset.status_code == 200

    def finished():
        found = LoopRun.objects.filter(pk__in=[r.pk for r in runs])
        return all(r.is_terminal for r in found) and list(found)

    for run in wait_for(finished, timeout=60):
        assert (run.state, run.exit_reason, run.iteration) == (
            Run.EXHAUSTED,
            "max_iterations",
            20,
        )
