"""The domain page (live stack icicle, throughput) and the run page with its controls."""

from __future__ import annotations

import json
import re
import time
from html import unescape

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from loops import engine, services
from loops.declare import sync_declarations
from loops.models import Agent, Bid, Contribution, Domain, Iteration, LoopRun
from oversight.models import AuditEvent
from tests.conftest import drive, with_role

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State


def step_until_micro(run: LoopRun) -> list[LoopRun]:
    """Step lab-main until its stack is main → sub → micro (the micro still live)."""
    for _ in range(20):
        frames = list(LoopRun.objects.filter(root_id=run.pk).order_by("depth"))
        if any(f.depth == 2 for f in frames):
            return frames
        for frame in frames:
            if frame.state == State.RUNNING:
                engine.advance(run_id=frame.pk)
    raise AssertionError("the stack never reached a micro loop")


def start_lab() -> LoopRun:
    return services.run_start(domain="lab", blueprint="lab-main", input={"x": 4})


def test_domain_page_shows_the_live_stack_as_an_icicle(client, viewer):
    main = start_lab()
    frames = step_until_micro(main)

    response = client.get("/loops/domains/lab/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="domain-lab-stack"' in html
    # The figure travels as JSON in an attribute, drawn by static/console/app.js: no inline
    # script, which the Content Security Policy would refuse.
    # A click on a frame opens it (data-open-on-click, bound by app.js).
    icicle_div = r'<div class="plotly-figure" id="domain-lab-icicle" data-figure="([^"]*)"'
    icicle_div += " data-open-on-click>"
    found = re.search(icicle_div, html)
    assert found is not None
    figure = json.loads(unescape(found.group(1)))
    (icicle,) = figure["data"]
    assert icicle["type"] == "icicle"
    for frame in frames:
        assert str(frame.pk) in icicle["ids"]  # ids and parents are run ids
        assert f"/loops/runs/{frame.pk}/" in icicle["customdata"]  # the URL a click opens
    assert figure["config"]["displaylogo"] is False
    assert "<script>" not in html and "Plotly.newPlot" not in html
    # The key under the chart says the same in words: how many frames are in each state.
    for state in {frame.state for frame in frames}:
        n = sum(frame.state == state for frame in frames)
        assert f'<li data-state="{state}">' in html
        assert f"</span>{n} {state}</li>" in html
    assert f'href="/loops/runs/{main.pk}/"' in html
    assert "halts/new?scope=domain:lab" not in html  # viewers get no controls
    assert "Pause</button>" not in html


def test_domain_page_offers_operators_pause_and_halt(client, operator):
    start_lab()

    html = client.get("/loops/domains/lab/").content.decode()

    assert "/oversight/halts/new?scope=domain:lab" in html
    assert "Pause</button>" in html


def test_run_page_shows_breadcrumbs_bids_and_attempts(client, viewer):
    main = start_lab()
    frames = step_until_micro(main)
    drive(main)
    micro = next(f for f in frames if f.depth == 2)
    sub = next(f for f in frames if f.depth == 1)

    html = client.get(f"/loops/runs/{micro.pk}/").content.decode()

    crumbs = html.split('class="breadcrumbs"')[1].split("</nav>")[0]
    assert crumbs.index(f"lab-main #{main.pk}") < crumbs.index(f"lab-sub #{sub.pk}")
    assert crumbs.index(f"lab-sub #{sub.pk}") < crumbs.index(f"lab-micro #{micro.pk}")
    bid = Bid.objects.filter(iteration__run=micro, selected=True).first()
    assert bid is not None and bid.selection_reason
    assert bid.selection_reason in html or bid.selection_reason[:20] in html
    assert "1 attempt" in html
    assert "of 5" in html  # lab-micro's max_iterations
    assert "Pause</button>" not in html

    main_html = client.get(f"/loops/runs/{main.pk}/").content.decode()
    assert f'href="/loops/runs/{sub.pk}/"' in main_html  # children


def test_viewer_cannot_pause(client, viewer):
    main = start_lab()

    response = client.post(f"/loops/runs/{main.pk}/pause", HTTP_HX_REQUEST="true")

    assert response.status_code == 403
    main.refresh_from_db()
    assert main.state == State.RUNNING
    assert not AuditEvent.objects.filter(verb="run.paused").exists()


def test_operator_pauses_and_resumes_and_it_is_audited(client, operator):
    main = start_lab()

    response = client.post(f"/loops/runs/{main.pk}/pause", HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert f'id="run-{main.pk}-controls"' in response.content.decode()
    main.refresh_from_db()
    assert main.state == State.PAUSED
    assert AuditEvent.objects.filter(verb="run.paused").count() == 1

    response = client.post(f"/loops/runs/{main.pk}/resume")
    assert response.status_code == 302
    main.refresh_from_db()
    assert main.state == State.RUNNING


def test_pausing_a_finished_run_answers_200_with_a_notice_or_409_without_htmx(client, operator):
    main = drive(start_lab())
    assert main.is_terminal

    response = client.post(f"/loops/runs/{main.pk}/pause", HTTP_HX_REQUEST="true")

    assert response.status_code == 200
    assert "console:notice" in response["HX-Trigger"]
    assert main.state in response.content.decode()
    without_htmx = client.post(f"/loops/runs/{main.pk}/pause")  # a form posted without JS
    assert without_htmx.status_code == 409
    assert f"is {main.state}: it cannot be paused" in without_htmx.content.decode()


def test_get_is_refused_on_controls(client, operator):
    main = start_lab()
    assert client.get(f"/loops/runs/{main.pk}/pause").status_code == 405


def _queries(client, run_id: int) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(f"/loops/runs/{run_id}/").status_code == 200
    return len(ctx.captured_queries)


def test_run_page_queries_do_not_grow_with_iterations(client, viewer):
    main = drive(start_lab())
    short = _queries(client, main.pk)
    agent = Agent.objects.get(domain__slug="lab", name="planner")
    now = timezone.now()
    base = main.iterations.count()
    for n in range(base + 1, base + 8):
        it = Iteration.objects.create(
            run=main,
            number=n,
            phase=0,
            phase_name="plan",
            broadcast={"task_type": "lab.plan"},
            bid_window_ends_at=now,
            gather_deadline_at=now,
        )
        Bid.objects.create(iteration=it, agent=agent, decision="bid", reason="can do")
        Contribution.objects.create(iteration=it, agent=agent, attempts=[{"n": 1}])

    assert _queries(client, main.pk) == short


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_frame_changes_push_stack_and_overview_coalesced_and_the_latest_state_last(
    celery_worker, client, django_user_model
):
    """A burst of frame changes: the first pushed at once, then at most one push per
    coalescing window, the last with the state at the end of the burst (a worker renders
    the trailing push), and no push per change (DESIGN.md section 6). Received on a
    signed-in websocket through the real Redis channel layer. Under load the burst may span
    several windows, so the counts are bounded by the burst's own duration."""

    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator
    from django.conf import settings

    from common.push import COALESCE_MIN_SECONDS
    from console.asgi import application

    def signed_in_cookie() -> tuple[bytes, int]:
        sync_declarations()
        user = with_role(django_user_model.objects.create_user("watcher"))
        client.force_login(user)
        name = settings.SESSION_COOKIE_NAME
        lab = Domain.objects.get(slug="lab").pk
        return f"{name}={client.cookies[name].value}".encode(), lab

    cookie, lab = await sync_to_async(signed_in_cookie)()
    socket = WebsocketCommunicator(  # as the domain page and the overview subscribe
        application,
        f"/ws/console/?topics=domain.{lab},overview",
        headers=[(b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", cookie)],
    )
    connected, _ = await socket.connect()
    assert connected
    burst_began = time.monotonic()
    runs = [await sync_to_async(_held_lab_run)() for _ in range(8)]  # eight commits
    burst = time.monotonic() - burst_began
    every = [f"/loops/runs/{run.pk}/" for run in runs]

    stacks: list[tuple[float, str]] = []
    overviews: list[str] = []
    deadline = time.monotonic() + 10
    # Until both show the latest state; worker liveness beats may come between.
    while not (
        stacks
        and all(link in stacks[-1][1] for link in every)
        and overviews
        and '<dd class="runs-live">8</dd>' in overviews[-1]
    ):
        assert time.monotonic() < deadline, "the latest state did not arrive"
        message = await socket.receive_from(timeout=5)
        if 'id="domain-lab-stack"' in message:
            stacks.append((time.monotonic(), message.replace("\\u002f", "/")))
        if 'id="overview-totals"' in message:
            overviews.append(message)
    await socket.disconnect()

    # The first change at once, before the burst ended; the latest state last.
    assert every[-1] not in stacks[0][1]
    assert "<strong>8</strong> live runs" in overviews[-1]
    # Coalesced: pushes leave at least a window apart while the burst lasts, and one
    # trailing push follows it, where a push per change would make eight. (Counted, not
    # timed: arrival times carry the delivery's jitter.)
    windows = int(burst / COALESCE_MIN_SECONDS) + 3  # the shortest: one socket
    assert len(stacks) <= windows and len(overviews) <= windows
    pushed = [html for _, html in stacks] + overviews
    assert all('hx-swap-oob="true"' in html and "csrf" not in html for html in pushed)


def _held_lab_run() -> LoopRun:
    """A lab-main run in its own commit, leased to another worker so that nothing steps it
    (its frames stay as they are while the pushes are counted)."""
    from datetime import timedelta

    from django.db import transaction

    from loops.declare import BLUEPRINTS
    from loops.models import Blueprint, Domain

    with transaction.atomic():
        run = services.create_run(
            BLUEPRINTS["lab-main"],
            Blueprint.objects.get(name="lab-main"),
            Domain.objects.get(slug="lab"),
            input={"x": 2},
            parent=None,
        )
        LoopRun.objects.filter(pk=run.pk).update(
            lease_worker="elsewhere", lease_expires_at=timezone.now() + timedelta(hours=1)
        )
    return run
