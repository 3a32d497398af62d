"""The domain page's activity charts and its pause and resume of the whole domain, and the
run page's iterations page by page (issue 6)."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta
from html import unescape

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.redis import redis_client
from loops import engine, rollup, selectors, services, tasks
from loops.models import Agent, Contribution, Domain, DomainMinute, Iteration, LoopRun
from oversight.models import AuditEvent
from oversight.services.halts import halt_engage
from tests.conftest import drive, wait_for, with_role

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
DASH = "\N{EN DASH}"  # the run page writes its ranges with it
State = LoopRun.State


def start(domain: str = "lab", blueprint: str = "lab-main") -> LoopRun:
    return services.run_start(domain=domain, blueprint=blueprint, input={"x": 3})


def stack_of(main: LoopRun) -> list[LoopRun]:
    """Step lab-main until it waits on lab-sub, which waits on a live lab-micro."""
    for _ in range(20):
        frames = list(LoopRun.objects.filter(root_id=main.pk).order_by("depth"))
        if any(f.depth == 2 for f in frames):
            return frames
        for frame in frames:
            if frame.state == State.RUNNING:
                engine.advance(run_id=frame.pk)
    raise AssertionError("the stack never reached a micro loop")


# --- Activity charts ----------------------------------------------------------------------


def iteration(run: LoopRun, number: int, closed_at: datetime, seconds: float, **fields):
    return Iteration.objects.create(
        run=run,
        number=number,
        phase=0,
        phase_name="plan",
        broadcast={"task_type": "lab.plan"},
        bid_window_ends_at=closed_at,
        gather_deadline_at=closed_at,
        status=Iteration.Status.CLOSED,
        outcome=fields.pop("outcome", Iteration.Outcome.VALIDATED),
        started_at=closed_at - timedelta(seconds=seconds),
        closed_at=closed_at,
        **fields,
    )


def call(it: Iteration, agent: Agent, finished_at: datetime | None, status: str, cost: float):
    return Contribution.objects.create(
        iteration=it, agent=agent, status=status, cost=cost, finished_at=finished_at
    )


def figure_data(html: str, div_id: str) -> list[dict]:
    """The traces plotly draws in div_id, read back from the figure's data-figure attribute
    (static/console/app.js draws it; no inline script, for the CSP)."""
    found = re.search(rf'<div class="plotly-figure" id="{div_id}" data-figure="([^"]*)"', html)
    assert found is not None, f"no figure {div_id}"
    return json.loads(unescape(found.group(1)))["data"]


def make_activity() -> tuple[Domain, datetime, datetime]:
    """Two minutes of a lab run's activity, plus noise the charts must leave out."""
    lab_run, arena_run = start(), start("arena", "arena-all")
    a = (timezone.now() - timedelta(minutes=10)).replace(second=0, microsecond=0)
    b = a + timedelta(minutes=2)
    agents = list(Agent.objects.filter(domain__slug="lab").order_by("name"))
    done, failed = Contribution.Status.COMPLETED, Contribution.Status.FAILED
    # Minute a: four iterations of 1-4 s and an abandoned one of 100 s (closed, untimed);
    # calls: three completed at 0.25 and one failed at 0.125.
    its = [iteration(lab_run, n, a + timedelta(seconds=n), seconds=n) for n in (1, 2, 3, 4)]
    abandoned = iteration(
        lab_run, 5, a + timedelta(seconds=30), 100, outcome=Iteration.Outcome.ABANDONED
    )
    for agent, status, amount in zip(
        agents, [done, done, done, failed], [0.25, 0.25, 0.25, 0.125], strict=True
    ):
        call(its[0], agent, a + timedelta(seconds=5), status, amount)
    call(its[1], agents[0], None, Contribution.Status.RUNNING, 9.0)  # not finished: left out
    call(abandoned, agents[0], a + timedelta(minutes=1, seconds=-1), failed, 0)  # minute a
    # Minute b: one iteration of 10 s and one failed call.
    late = iteration(lab_run, 6, b + timedelta(seconds=20), seconds=10)
    call(late, agents[1], b + timedelta(seconds=20), failed, 0)
    # Noise: another domain in minute a, and this domain two hours ago.
    arena_it = iteration(arena_run, 1, a + timedelta(seconds=2), seconds=50)
    call(arena_it, Agent.objects.filter(domain__slug="arena").first(), a, failed, 5.0)
    old = iteration(lab_run, 7, a - timedelta(hours=2), seconds=60)
    call(old, agents[2], a - timedelta(hours=2), failed, 7.0)
    return Domain.objects.get(slug="lab"), a, b


def test_it_aggregates_latency_errors_and_cost_per_minute():
    lab, a, b = make_activity()
    since = timezone.now() - timedelta(minutes=60)

    rollup.domain_minutes_sweep()  # the beat's pass: the first fills the last hour
    iterations, calls = selectors.activity_minutes(lab.pk, since)

    assert [(r["minute"], r["closed"]) for r in iterations] == [(a, 5), (b, 1)]
    assert [round(r["p50"], 3) for r in iterations] == [2.5, 10.0]
    # percentile_cont interpolates: 0.95 of the way through 1, 2, 3, 4 s is 3.85 s.
    assert [round(r["p95"], 3) for r in iterations] == [3.85, 10.0]
    assert [(r["minute"], r["calls"], r["failed"]) for r in calls] == [(a, 5, 2), (b, 1, 1)]
    assert [r["cost"] for r in calls] == [0.875, 0.0]


def test_the_domain_page_draws_the_four_charts_from_those_numbers(client, viewer):
    lab, _, _ = make_activity()
    rollup.domain_minutes_sweep()

    response = client.get("/loops/domains/lab/")

    assert response.status_code == 200
    html = response.content.decode()
    for name in ("throughput", "latency", "errors", "cost"):
        assert f'id="domain-lab-{name}"' in html
    assert [t["y"] for t in figure_data(html, f"domain-{lab.pk}-throughput")] == [[5, 1]]
    median, p95 = figure_data(html, f"domain-{lab.pk}-latency")
    assert (median["name"], median["y"]) == ("median", [2.5, 10.0])
    assert (p95["name"], p95["y"]) == ("p95", [3.85, 10.0])
    (errors,) = figure_data(html, f"domain-{lab.pk}-errors")
    assert errors["y"] == [0.4, 1.0]
    assert errors["customdata"] == [[2, 5], [1, 1]]
    assert [t["y"] for t in figure_data(html, f"domain-{lab.pk}-cost")] == [[0.875, 0.0]]
    assert "cdn" not in html.lower()


def _domain_page_queries(client) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/loops/domains/lab/").status_code == 200
    return len(ctx.captured_queries)


def test_the_domain_page_costs_the_same_queries_however_much_happened(client, operator):
    make_activity()
    rollup.domain_minutes_sweep()
    client.get("/loops/domains/lab/")  # warm: session, permissions
    few = _domain_page_queries(client)

    more = [start() for _ in range(5)]
    stack_of(more[0])
    agents = list(Agent.objects.filter(domain__slug="lab"))
    now = timezone.now()
    for run in more[1:]:
        for n in range(1, 13):
            it = iteration(run, n, now - timedelta(minutes=n * 3), seconds=n)
            for agent in agents:
                call(it, agent, it.closed_at, Contribution.Status.COMPLETED, 0.01)
    rollup.domain_minutes_sweep(since=now - timedelta(hours=1))
    assert DomainMinute.objects.filter(domain__slug="lab").count() > 2  # more minutes to draw

    assert _domain_page_queries(client) == few


def minute_rows() -> list[tuple]:
    return list(
        DomainMinute.objects.order_by("domain_id", "minute").values_list(
            "domain__slug", "minute", "closed", "p50", "p95", "calls", "failed", "cost"
        )
    )


def test_the_sweep_run_again_writes_the_same_rows():
    _, a, b = make_activity()

    assert rollup.domain_minutes_sweep() == 3  # lab's two minutes and arena's one
    first = minute_rows()
    assert rollup.domain_minutes_sweep(since=a - timedelta(minutes=5)) == 3
    assert rollup.domain_minutes_sweep() == 1  # from b on, the latest minute rolled up

    assert minute_rows() == first
    assert sorted((row[0], row[1], row[2], row[5]) for row in first) == [
        ("arena", a, 1, 1),
        ("lab", a, 5, 5),
        ("lab", b, 1, 1),
    ]


def test_the_current_minute_is_recomputed_on_every_pass(client, viewer):
    lab_run = start()
    agent = Agent.objects.filter(domain__slug="lab").first()
    now = timezone.now()
    current = now.replace(second=0, microsecond=0)
    first = iteration(lab_run, 1, now, seconds=2)
    call(first, agent, now, Contribution.Status.COMPLETED, 0.5)
    rollup.domain_minutes_sweep()
    row = DomainMinute.objects.get(domain__slug="lab")
    assert (row.minute, row.closed, row.p50, row.calls, row.cost) == (current, 1, 2.0, 1, 0.5)

    # The minute goes on: another iteration, a failed call, in the same minute.
    second = iteration(lab_run, 2, now, seconds=4)
    call(second, agent, now, Contribution.Status.FAILED, 0.25)
    rollup.domain_minutes_sweep()

    row = DomainMinute.objects.get(domain__slug="lab")  # the same row, recomputed whole
    assert (row.closed, row.p50, row.calls, row.failed, row.cost) == (2, 3.0, 2, 1, 0.75)
    html = client.get("/loops/domains/lab/").content.decode()
    assert [t["y"] for t in figure_data(html, f"domain-{row.domain_id}-throughput")] == [[2]]


def test_the_sweep_drops_minutes_whose_rows_are_gone_and_old_minutes():
    lab, a, b = make_activity()
    rollup.domain_minutes_sweep()
    ancient = DomainMinute.objects.create(
        domain=lab, minute=a - rollup.ROLLUP_KEEP - timedelta(hours=1), closed=1
    )
    Iteration.objects.filter(run__domain=lab, closed_at__gte=b).delete()

    rollup.domain_minutes_sweep(since=a)

    assert not DomainMinute.objects.filter(pk=ancient.pk).exists()
    assert list(
        DomainMinute.objects.filter(domain=lab).values_list("minute", "closed", "calls")
    ) == [(a, 5, 5)]


def test_a_racing_sweep_skips_its_turn():
    make_activity()
    other = connections.create_connection("default")  # another session, as another beat's
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [rollup.SWEEP_LOCK])
        assert rollup.domain_minutes_sweep() == 0
        assert not DomainMinute.objects.exists()
        with other.cursor() as cursor:  # released now: a closing session frees it later
            cursor.execute("SELECT pg_advisory_unlock(%s)", [rollup.SWEEP_LOCK])
    finally:
        other.close()
    assert rollup.domain_minutes_sweep() == 3


def test_the_beat_sweeps_through_its_task(settings):
    lab, _, _ = make_activity()
    entry = settings.CELERY_BEAT_SCHEDULE["domain-minutes-sweep"]
    assert (entry["task"], entry["schedule"]) == ("loops.tasks.domain_minutes_sweep", 5.0)

    tasks.domain_minutes_sweep.apply()

    assert DomainMinute.objects.filter(domain=lab).count() == 2


# --- Live main runs, a page at a time -------------------------------------------------------


def test_the_live_main_runs_come_a_page_at_a_time(client, operator):
    runs = [start() for _ in range(30)]
    drive(runs[0])  # finished: not live, not listed
    live = runs[1:][::-1]  # newest first

    first = client.get("/loops/domains/lab/").content.decode()
    assert f"1{DASH}25 of 29, newest first" in first and "page 1 of 2" in first
    assert first.count('class="run-controls"') == 25
    for run in live[:25]:
        assert f'id="run-{run.pk}-controls"' in first
    assert f'id="run-{live[25].pk}-controls"' not in first
    assert 'href="?page=2#main-runs"' in first

    second = client.get("/loops/domains/lab/?page=2").content.decode()
    assert f"26{DASH}29 of 29" in second
    for run in live[25:]:
        assert f'id="run-{run.pk}-controls"' in second  # reachable, with its controls
    assert (
        client.get("/loops/domains/lab/?page=9").content.decode().count('class="run-controls"') == 4
    )  # past the end: the last page
    assert client.get("/loops/domains/lab/?page=x").status_code == 400


# --- Pause and resume of a domain -----------------------------------------------------------


def lab_runs() -> dict[str, LoopRun]:
    """A main → sub → micro stack, a plain running main, one an operator paused, one
    finished, one under a run halt, and a running run of another domain."""
    stacked = start()
    frames = stack_of(stacked)
    runs = {f"depth{f.depth}": f for f in frames}
    runs["running"] = start()
    runs["by_hand"] = services.run_pause(run_id=start().pk, actor=None)
    runs["finished"] = drive(start())
    runs["halted"] = start()
    halt_engage(actor=None, scope=f"run:{runs['halted'].pk}", reason="drill")
    runs["arena"] = start("arena", "arena-all")
    return runs


def states(runs: dict[str, LoopRun]) -> dict[str, tuple[str, str]]:
    """Each run's (state, paused_by) as the database has it now."""
    now = dict(
        (pk, (state, by))
        for pk, state, by in LoopRun.objects.values_list("pk", "state", "paused_by")
    )
    return {name: now[run.pk] for name, run in runs.items()}


def test_a_viewer_gets_403_and_changes_nothing(client, viewer):
    runs = lab_runs()
    before = states(runs)

    assert client.post("/loops/domains/lab/pause", HTTP_HX_REQUEST="true").status_code == 403
    assert client.post("/loops/domains/lab/resume", HTTP_HX_REQUEST="true").status_code == 403

    assert states(runs) == before
    assert not AuditEvent.objects.filter(verb__startswith="domain.").exists()
    html = client.get("/loops/domains/lab/").content.decode()
    assert "domain-lab-controls" not in html and "/loops/domains/lab/pause" not in html


def test_an_operator_pauses_exactly_the_live_runs_of_the_domain(client, operator):
    runs = lab_runs()
    assert runs["depth0"].state == State.WAITING and runs["depth2"].state == State.RUNNING
    html = client.get("/loops/domains/lab/").content.decode()
    assert 'id="domain-lab-controls"' in html and "(4 live)" in html

    response = client.post(
        "/loops/domains/lab/pause", {"reason": "supplier outage"}, HTTP_HX_REQUEST="true"
    )

    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="domain-lab-controls"' in body and "(0 live)" in body
    assert "(4 paused by the domain pause)" in body
    # The main runs' own controls on the page follow, out of band.
    assert f'id="run-{runs["running"].pk}-controls" class="run-controls" hx-swap-oob' in body
    assert "4 runs of Laboratory paused" in response["HX-Trigger"]
    mark = ("paused", "domain:lab")
    assert states(runs) == {
        "depth0": mark,
        "depth1": mark,
        "depth2": mark,
        "running": mark,
        "by_hand": ("paused", "system"),
        "finished": ("succeeded", ""),
        "halted": ("halted", ""),
        "arena": ("running", ""),
    }
    prior = dict(LoopRun.objects.filter(paused_by="domain:lab").values_list("pk", "prior_state"))
    assert prior[runs["depth0"].pk] == "waiting" and prior[runs["depth2"].pk] == "running"
    event = AuditEvent.objects.get(verb="domain.paused")
    assert (event.actor_name, event.target_type, event.note) == (
        "otto",
        "domain",
        "supplier outage",
    )
    assert event.data["runs"] == 4
    assert sorted(event.data["run_ids"]) == sorted(
        runs[n].pk for n in ("depth0", "depth1", "depth2", "running")
    )


def test_resume_resumes_only_what_the_domain_pause_paused(client, operator):
    runs = lab_runs()
    client.post("/loops/domains/lab/pause", HTTP_HX_REQUEST="true")
    # A breaker's pause after the domain's: its mark, not the domain's, stays on the run.
    breaker_paused = start()
    LoopRun.objects.filter(pk=breaker_paused.pk).update(
        state=State.PAUSED, prior_state=State.RUNNING, paused_by="breaker:7"
    )
    runs["breaker"] = breaker_paused

    response = client.post("/loops/domains/lab/resume", HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert "(0 paused by the domain pause)" in response.content.decode()
    assert states(runs) == {
        "depth0": ("waiting", ""),
        "depth1": ("waiting", ""),
        "depth2": ("running", ""),
        "running": ("running", ""),
        "by_hand": ("paused", "system"),
        "finished": ("succeeded", ""),
        "halted": ("halted", ""),
        "arena": ("running", ""),
        "breaker": ("paused", "breaker:7"),
    }
    event = AuditEvent.objects.get(verb="domain.resumed")
    assert (event.actor_name, event.data["runs"]) == ("otto", 4)
    # Nothing left to resume: a second press touches nothing, and says so.
    again = client.post("/loops/domains/lab/resume", HTTP_HX_REQUEST="true")
    assert "0 runs of Laboratory resumed" in again["HX-Trigger"]
    assert AuditEvent.objects.get(verb="domain.resumed", data__runs=0)


def test_a_halt_over_a_domain_pause_gives_the_runs_back_to_it(client, operator):
    run = start()
    client.post("/loops/domains/lab/pause", HTTP_HX_REQUEST="true")
    halt, _ = halt_engage(actor=None, scope="domain:lab", reason="drill")
    run.refresh_from_db()
    assert (run.state, run.paused_by) == ("halted", "domain:lab")

    client.post("/loops/domains/lab/resume", HTTP_HX_REQUEST="true")
    run.refresh_from_db()
    assert run.state == "halted"  # a halt is absolute: only its lift moves the run

    from oversight.services.halts import halt_lift

    admin = with_role(type(operator).objects.create_user("ada"), "admin")
    halt_lift(halt_id=halt.pk, actor=admin, reason="over")
    client.post("/loops/domains/lab/resume", HTTP_HX_REQUEST="true")
    run.refresh_from_db()
    assert run.state == "running"


def test_bad_input_and_wrong_methods_get_a_clear_4xx(client, operator):
    run = start()

    assert client.get("/loops/domains/lab/pause").status_code == 405
    assert client.post("/loops/domains/nowhere/pause").status_code == 404
    response = client.post("/loops/domains/lab/pause", {"reason": "x" * 501})
    assert response.status_code == 400
    assert "longer than 500" in response.content.decode()

    run.refresh_from_db()
    assert run.state == State.RUNNING
    assert not AuditEvent.objects.filter(verb__startswith="domain.").exists()
    # Without htmx, the page again.
    response = client.post("/loops/domains/lab/pause")
    assert (response.status_code, response["Location"]) == (302, "/loops/domains/lab/")


@pytest.mark.django_db(transaction=True)
def test_resumed_runs_step_again_on_a_worker(celery_worker, client, operator):
    run = start(blueprint="lab-slow")  # its agent takes 0.3 s a call: it is still live below

    assert client.post("/loops/domains/lab/pause", HTTP_HX_REQUEST="true").status_code == 200
    run.refresh_from_db()
    assert run.state == State.PAUSED
    time.sleep(1)  # long enough for two calls, had the pause not held
    run.refresh_from_db()
    assert (run.state, run.exit_reason) == (State.PAUSED, "")

    client.post("/loops/domains/lab/resume", HTTP_HX_REQUEST="true")

    wait_for(lambda: LoopRun.objects.get(pk=run.pk).state == State.SUCCEEDED)
    # The pushes this test caused are coalesced for a second (common.push): let their
    # guards expire, so that a later test's first push goes out at once as it expects.
    # (push-guard and push-trailing: the push-seq counters, common.push, stay.)
    wait_for(lambda: not any(redis_client().keys(f"push-{k}:*") for k in ("guard", "trailing")))
    time.sleep(0.3)  # the trailing push, sent as its guard expires


# --- Run page: iterations page by page ------------------------------------------------------


def long_run(n: int = 120) -> tuple[LoopRun, dict[int, Iteration]]:
    run = start()
    now = timezone.now()
    its = {k: iteration(run, k, now, seconds=1) for k in range(1, n + 1)}
    return run, its


def test_older_iterations_are_reached_page_by_page(client, viewer):
    run, its = long_run(120)

    first = client.get(f"/loops/runs/{run.pk}/").content.decode()
    assert f'id="iteration-{its[120].pk}"' in first and f'id="iteration-{its[71].pk}"' in first
    assert f'id="iteration-{its[70].pk}"' not in first
    assert f"1{DASH}50 of 120" in first and "page 1 of 3" in first
    assert 'href="?page=2#iterations"' in first

    second = client.get(f"/loops/runs/{run.pk}/?page=2").content.decode()
    assert f'id="iteration-{its[70].pk}"' in second and f'id="iteration-{its[21].pk}"' in second
    assert f"51{DASH}100 of 120" in second and 'href="?page=3#iterations"' in second

    last = client.get(f"/loops/runs/{run.pk}/?page=3").content.decode()
    assert f'id="iteration-{its[1].pk}"' in last and f'id="iteration-{its[20].pk}"' in last
    assert f"101{DASH}120 of 120" in last and "?page=4" not in last


def test_bad_page_numbers_get_400_and_past_the_end_the_last_page(client, viewer):
    run, its = long_run(60)

    for bad in ("abc", "0", "-1", "1.5", "", "٣"):
        response = client.get(f"/loops/runs/{run.pk}/", {"page": bad})
        assert response.status_code == 400, bad
        assert "whole number" in response.content.decode()
    past = client.get(f"/loops/runs/{run.pk}/?page=99")
    assert past.status_code == 200
    assert f'id="iteration-{its[1].pk}"' in past.content.decode()
    assert "page 2 of 2" in past.content.decode()


def test_a_short_run_has_no_pager(client, viewer):
    run, _ = long_run(3)
    html = client.get(f"/loops/runs/{run.pk}/").content.decode()
    assert f"1{DASH}3 of 3" in html and "Iteration pages" not in html


def test_every_page_costs_the_same_queries(client, viewer):
    run, _ = long_run(120)
    client.get(f"/loops/runs/{run.pk}/")  # warm

    counts = []
    for number in (1, 2, 3):
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(f"/loops/runs/{run.pk}/?page={number}").status_code == 200
        counts.append(len(ctx.captured_queries))

    assert len(set(counts)) == 1
