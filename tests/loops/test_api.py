"""The loop endpoints of the REST API (DESIGN.md section 5) on the real database, and once
against a real worker that runs a three-level stack to the end."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.utils import timezone

from console.auth import token_create
from loops.models import Agent, ApiToken, Blueprint, Domain, Event, EventCounter, LoopRun
from tests.conftest import agent_bearer, bearer, post_json, signed_in, wait_for

State = LoopRun.State
MICROSECONDS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(\+00:00|Z)$")


# --- Personas and rows ------------------------------------------------------------------


# The personas (viewer, operator, outsider) and `declared` are tests/conftest.py's.
pytestmark = pytest.mark.usefixtures("declared")


def _run(blueprint: str = "lab-main", *, parent: LoopRun | None = None, **fields) -> LoopRun:
    bp = Blueprint.objects.get(name=blueprint)
    run = LoopRun.objects.create(
        blueprint=bp,
        domain=bp.domain,
        parent=parent,
        root_id=parent.root_id if parent else None,
        depth=parent.depth + 1 if parent else 0,
        **fields,
    )
    if parent is None:
        LoopRun.objects.filter(pk=run.pk).update(root=run.pk)
        run.root_id = run.pk
        EventCounter.objects.create(root=run)  # the services write the trace through it
    return run


# --- Starting a run ---------------------------------------------------------------------


def test_it_starts_a_main_loop(operator):
    response = post_json(
        signed_in(operator),
        "/api/v1/domains/lab/runs",
        {"blueprint": "lab-main", "input": {"x": 4}},
    )

    assert response.status_code == 201
    run = LoopRun.objects.get(pk=response.json()["id"])
    assert response.json() == {"id": run.pk}
    assert (run.blueprint.name, run.domain.slug, run.depth) == ("lab-main", "lab", 0)
    assert run.input == {"x": 4}
    assert run.created_by == operator


def test_a_run_started_through_the_api_is_listed_and_in_the_console_tree(operator):
    """CONCEPTS 50: the control plane and the console show the same run."""
    client = signed_in(operator)
    started = post_json(client, "/api/v1/domains/lab/runs", {"blueprint": "lab-main", "input": {}})
    run_id = started.json()["id"]

    listed = client.get("/api/v1/runs?domain=lab").json()
    assert run_id in [item["id"] for item in listed["items"]]
    page = client.get("/loops/domains/lab/").content.decode().replace("\\u002f", "/")
    assert f"&quot;{run_id}&quot;" in page  # a frame of the live stack icicle (its data-figure)
    assert f'href="/loops/runs/{run_id}/"' in page  # a row of the live main runs


def test_it_answers_404_for_an_unknown_domain(operator):
    response = post_json(
        signed_in(operator), "/api/v1/domains/nowhere/runs", {"blueprint": "lab-main"}
    )

    assert response.status_code == 404
    assert response.json() == {"error": "unknown_domain", "detail": "There is no domain 'nowhere'."}


@pytest.mark.parametrize(
    ("blueprint", "code"), [("no-such-loop", "unknown_blueprint"), ("lab-sub", "not_a_main_loop")]
)
def test_it_answers_400_for_a_blueprint_it_cannot_start(operator, blueprint, code):
    response = post_json(signed_in(operator), "/api/v1/domains/lab/runs", {"blueprint": blueprint})

    assert response.status_code == 400
    assert response.json()["error"] == code
    assert blueprint in response.json()["detail"]
    assert not LoopRun.objects.exists()


def test_it_answers_400_for_malformed_json(operator):
    response = signed_in(operator).post(
        "/api/v1/domains/lab/runs", '{"blueprint": ', content_type="application/json"
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_json",
        "detail": "The request body is not valid JSON.",
    }


def test_it_answers_400_naming_a_missing_field(operator):
    response = post_json(signed_in(operator), "/api/v1/domains/lab/runs", {"input": {}})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "blueprint" in response.json()["detail"]


def test_it_requires_the_operator_role_to_start(viewer):
    response = post_json(signed_in(viewer), "/api/v1/domains/lab/runs", {"blueprint": "lab-main"})

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "This needs the operator role."}
    assert not LoopRun.objects.exists()


# --- Authentication ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/domains"),
        ("get", "/api/v1/blueprints"),
        ("get", "/api/v1/runs"),
        ("get", "/api/v1/runs/1"),
        ("get", "/api/v1/runs/1/iterations"),
        ("get", "/api/v1/runs/1/events"),
        ("get", "/api/v1/agents"),
        ("post", "/api/v1/domains/lab/runs"),
        ("post", "/api/v1/runs/1/cancel"),
        ("post", "/api/v1/runs/1/pause"),
        ("post", "/api/v1/runs/1/resume"),
        ("post", "/api/v1/agents/1/heartbeat"),
    ],
)
def test_it_answers_401_to_anonymous_callers(client, method, path):
    response = getattr(client, method)(path)

    assert response.status_code == 401
    assert response.json() == {
        "error": "unauthenticated",
        "detail": "Sign in or send a bearer token.",
    }


def test_it_hides_runs_from_outsiders(outsider):
    response = signed_in(outsider).get("/api/v1/runs")

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "This needs the viewer role."}


def test_it_accepts_a_users_bearer_token(operator):
    token = token_create(user=operator)

    response = post_json(bearer(token), "/api/v1/domains/lab/runs", {"blueprint": "lab-main"})

    assert response.status_code == 201
    assert LoopRun.objects.get(pk=response.json()["id"]).created_by == operator
    stored = ApiToken.objects.get(user=operator)
    assert stored.token_hash != token and len(stored.token_hash) == 64
    assert stored.last_used_at is not None


def test_it_rejects_a_revoked_token(viewer):
    token = token_create(user=viewer)
    ApiToken.objects.update(revoked_at=timezone.now())

    response = bearer(token).get("/api/v1/runs")

    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_it_rejects_an_unknown_token(viewer):
    assert bearer("not-a-token").get("/api/v1/runs").status_code == 401


def test_it_records_token_use_at_most_once_a_minute(viewer):
    token = token_create(user=viewer)
    client = bearer(token)
    client.get("/api/v1/runs")
    first = ApiToken.objects.get().last_used_at

    client.get("/api/v1/runs")
    assert ApiToken.objects.get().last_used_at == first

    ApiToken.objects.update(last_used_at=first - timedelta(minutes=2))
    client.get("/api/v1/runs")
    assert ApiToken.objects.get().last_used_at > first


def test_it_checks_csrf_for_a_session_but_not_for_a_token(operator):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    token_client = Client(
        enforce_csrf_checks=True, headers={"Authorization": f"Bearer {token_create(user=operator)}"}
    )

    forged = post_json(browser, "/api/v1/domains/lab/runs", {"blueprint": "lab-main"})
    scripted = post_json(token_client, "/api/v1/domains/lab/runs", {"blueprint": "lab-main"})

    assert forged.status_code == 403
    assert forged.json()["error"] == "csrf_failed"
    assert scripted.status_code == 201
    assert LoopRun.objects.count() == 1


def test_it_gives_an_agent_token_no_role(viewer):
    agent = Agent.objects.get(name="squarer")

    response = agent_bearer(agent).get("/api/v1/runs")

    assert response.status_code == 403


# --- Domains and blueprints -------------------------------------------------------------


def _lab(viewer) -> dict:
    items = signed_in(viewer).get("/api/v1/domains").json()["items"]
    return next(item for item in items if item["slug"] == "lab")


def test_it_derives_the_domain_state_from_its_live_runs(viewer):
    assert _lab(viewer)["state"] == "standby"

    main = _run(state=State.RUNNING)
    assert _lab(viewer)["state"] == "active"

    child = _run("lab-sub", parent=main, state=State.RUNNING)
    assert _lab(viewer)["state"] == "processing"

    LoopRun.objects.filter(pk=child.pk).update(state=State.SUCCEEDED)
    assert _lab(viewer)["state"] == "active"

    LoopRun.objects.filter(pk=main.pk).update(state=State.FAILED)
    assert _lab(viewer)["state"] == "standby"


def test_it_counts_runs_by_state_as_the_database_does(viewer):
    main = _run(state=State.RUNNING)
    _run("lab-sub", parent=main, state=State.PAUSED)
    _run(state=State.SUCCEEDED)
    _run(state=State.SUCCEEDED)

    response = signed_in(viewer).get("/api/v1/domains")
    lab = _lab(viewer)

    assert response.status_code == 200
    assert response.json()["next"] is None
    assert response.json()["count"] == Domain.objects.count()
    assert lab["name"] == "Laboratory"
    assert lab["counts"] == {state: LoopRun.objects.filter(state=state).count() for state in State}
    assert lab["counts"]["succeeded"] == 2
    assert lab["runs_live"] == 2


def test_it_lists_blueprints_with_kind_phases_children_and_policy(viewer):
    response = signed_in(viewer).get("/api/v1/blueprints?domain=lab")

    items = {item["name"]: item for item in response.json()["items"]}
    assert response.status_code == 200
    assert {"lab-main", "lab-sub", "lab-micro"} <= set(items)
    main = items["lab-main"]
    assert (main["kind"], main["domain"], main["children"]) == ("main", "lab", ["lab-sub"])
    assert [phase["name"] for phase in main["phases"]] == ["plan", "delegate"]
    assert main["policy"]["exits"]["budget"] == 1.0
    assert items["lab-micro"]["kind"] == "micro"
    assert {"selection", "merge", "quorum", "max_depth"} <= set(main)


def test_it_filters_blueprints_by_domain(viewer):
    assert signed_in(viewer).get("/api/v1/blueprints?domain=elsewhere").json() == {
        "items": [],
        "count": 0,
        "next": None,
    }


# --- Runs -------------------------------------------------------------------------------


def _ids(response) -> set[int]:
    return {item["id"] for item in response.json()["items"]}


def test_it_filters_runs_by_state_parent_and_root(viewer):
    main = _run(state=State.WAITING)
    sub = _run("lab-sub", parent=main, state=State.RUNNING)
    micro = _run("lab-micro", parent=sub, state=State.SUCCEEDED)
    other = _run(state=State.SUCCEEDED)
    client = signed_in(viewer)

    assert _ids(client.get("/api/v1/runs")) == {main.pk, sub.pk, micro.pk, other.pk}
    assert _ids(client.get("/api/v1/runs?state=succeeded")) == {micro.pk, other.pk}
    assert _ids(client.get(f"/api/v1/runs?parent={main.pk}")) == {sub.pk}
    assert _ids(client.get(f"/api/v1/runs?root={main.pk}")) == {main.pk, sub.pk, micro.pk}
    assert _ids(client.get("/api/v1/runs?domain=lab&state=running")) == {sub.pk}
    assert _ids(client.get("/api/v1/runs?domain=elsewhere")) == set()


def test_it_answers_400_naming_an_unknown_state(viewer):
    response = signed_in(viewer).get("/api/v1/runs?state=bogus")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "'bogus' is not a run state" in response.json()["detail"]


def test_it_pages_through_runs_with_next(viewer):
    runs = [_run(state=State.SUCCEEDED) for _ in range(3)]
    client = signed_in(viewer)

    first = client.get("/api/v1/runs?state=succeeded&limit=2").json()
    second = client.get(first["next"]).json()

    assert first["count"] == second["count"] == 3
    assert first["next"].startswith("http://testserver/api/v1/runs?")
    assert "state=succeeded" in first["next"] and "offset=2" in first["next"]
    assert [item["id"] for item in first["items"] + second["items"]] == [
        run.pk for run in reversed(runs)
    ]
    assert second["next"] is None


def test_it_caps_the_page_size(viewer):
    response = signed_in(viewer).get("/api/v1/runs?limit=501")

    assert response.status_code == 400
    assert "limit" in response.json()["detail"]


@pytest.mark.parametrize("rows", [10, 30])
def test_it_lists_runs_in_queries_independent_of_their_number(
    viewer, rows, django_assert_max_num_queries
):
    mains = [_run(state=State.RUNNING) for _ in range(rows // 2)]
    for main in mains:
        _run("lab-sub", parent=main, state=State.RUNNING)
    client = signed_in(viewer)

    # session, user, permissions, count, page: the same five for 10 rows as for 30
    with django_assert_max_num_queries(6):
        response = client.get("/api/v1/runs?limit=500")

    assert response.json()["count"] == rows


def test_it_shows_a_run_with_its_stack(viewer):
    main = _run(state=State.WAITING, created_at=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    sub = _run("lab-sub", parent=main, state=State.RUNNING)
    micro = _run(
        "lab-micro",
        parent=sub,
        state=State.RUNNING,
        created_at=datetime(2025, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
    )
    client = signed_in(viewer)

    top = client.get(f"/api/v1/runs/{main.pk}").json()
    bottom = client.get(f"/api/v1/runs/{micro.pk}").json()

    assert (top["id"], top["parent"], top["root"], top["depth"]) == (main.pk, None, main.pk, 0)
    assert top["children"] == [sub.pk]
    assert (top["blueprint"], top["kind"], top["domain"]) == ("lab-main", "main", "lab")
    assert (bottom["parent"], bottom["root"], bottom["depth"]) == (sub.pk, main.pk, 2)
    assert bottom["children"] == []
    # Microseconds are always written, also when they are zero.
    assert top["created_at"] == "2025-01-02T03:04:05.000000+00:00"
    assert bottom["created_at"] == "2025-01-02T03:04:05.123456+00:00"
    assert MICROSECONDS.match(bottom["started_at"] or "2025-01-02T03:04:05.000000Z")


def test_it_answers_404_for_an_unknown_run(viewer):
    for path in ("/api/v1/runs/999999", "/api/v1/runs/999999/iterations"):
        response = signed_in(viewer).get(path)

        assert response.status_code == 404
        assert response.json() == {"error": "not_found", "detail": "There is no loop run 999999."}


def test_it_shows_the_trace_of_the_stack(operator):
    client = signed_in(operator)
    run_id = post_json(client, "/api/v1/domains/lab/runs", {"blueprint": "lab-main"}).json()["id"]
    Event.objects.create(root_id=run_id, run_id=run_id, seq=2, type="probe", payload={"n": 2})

    trace = client.get(f"/api/v1/runs/{run_id}/events").json()
    later = client.get(f"/api/v1/runs/{run_id}/events?after=1").json()

    assert [(e["seq"], e["run"], e["type"]) for e in trace["items"]] == [
        (1, run_id, "run.started"),
        (2, run_id, "probe"),
    ]
    assert MICROSECONDS.match(trace["items"][0]["ts"])
    assert [e["seq"] for e in later["items"]] == [2]


# --- Operator controls ------------------------------------------------------------------


def test_it_pauses_and_resumes_a_run(operator):
    run = _run(state=State.RUNNING)
    client = signed_in(operator)

    paused = post_json(client, f"/api/v1/runs/{run.pk}/pause")
    resumed = post_json(client, f"/api/v1/runs/{run.pk}/resume")

    assert paused.status_code == 200
    assert (paused.json()["state"], paused.json()["prior_state"]) == ("paused", "running")
    assert resumed.status_code == 200
    assert resumed.json()["state"] == "running"
    run.refresh_from_db()
    assert run.state == State.RUNNING


def test_it_cancels_a_stack_with_a_reason(operator):
    main = _run(state=State.WAITING)
    sub = _run("lab-sub", parent=main, state=State.RUNNING)

    response = post_json(
        signed_in(operator), f"/api/v1/runs/{main.pk}/cancel", {"reason": "wrong input"}
    )

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["exit_detail"]) == (
        "cancelled",
        "wrong input",
    )
    assert response.json()["children"] == [sub.pk]
    sub.refresh_from_db()
    assert sub.state == State.CANCELLED


def test_it_cancels_without_a_body(operator):
    run = _run(state=State.RUNNING)

    response = signed_in(operator).post(f"/api/v1/runs/{run.pk}/cancel", "", "application/json")

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_it_answers_409_for_a_run_in_the_wrong_state(operator, action):
    run = _run(state=State.SUCCEEDED)
    to = {"pause": "paused", "cancel": "cancelled"}[action]

    response = post_json(signed_in(operator), f"/api/v1/runs/{run.pk}/{action}")

    assert response.status_code == 409
    assert response.json() == {
        "error": "wrong_state",
        "detail": f"run {run.pk} is succeeded; it cannot become {to}",
    }


def test_it_answers_409_when_resuming_a_finished_run(operator):
    run = _run(state=State.FAILED)

    response = post_json(signed_in(operator), f"/api/v1/runs/{run.pk}/resume")

    assert response.status_code == 409
    assert response.json()["error"] == "wrong_state"


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
def test_it_answers_404_when_controlling_an_unknown_run(operator, action):
    response = post_json(signed_in(operator), f"/api/v1/runs/999999/{action}")

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "There is no loop run 999999."}


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
def test_it_requires_the_operator_role_to_control(viewer, action):
    run = _run(state=State.RUNNING)

    response = post_json(signed_in(viewer), f"/api/v1/runs/{run.pk}/{action}")

    assert response.status_code == 403
    assert response.json()["detail"] == "This needs the operator role."
    run.refresh_from_db()
    assert run.state == State.RUNNING


def test_it_rejects_get_on_a_control(operator):
    run = _run(state=State.RUNNING)

    assert signed_in(operator).get(f"/api/v1/runs/{run.pk}/pause").status_code == 405


# --- Agents -----------------------------------------------------------------------------


def test_it_lists_agents_of_a_domain(viewer):
    response = signed_in(viewer).get("/api/v1/agents?domain=lab")

    names = {item["name"] for item in response.json()["items"]}
    assert response.status_code == 200
    assert {"planner", "squarer", "summariser", "slowpoke"} <= names
    squarer = next(item for item in response.json()["items"] if item["name"] == "squarer")
    assert (squarer["domain"], squarer["capabilities"]) == ("lab", ["arithmetic"])


def test_it_takes_an_agents_heartbeat_with_its_own_token():
    agent = Agent.objects.get(name="squarer")
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.OFFLINE)

    response = post_json(agent_bearer(agent), f"/api/v1/agents/{agent.pk}/heartbeat")

    agent.refresh_from_db()
    assert response.status_code == 200
    assert response.json() == {
        "id": agent.pk,
        "status": "online",
        "heartbeat_at": agent.heartbeat_at.isoformat(timespec="microseconds"),
    }


def test_it_refuses_a_heartbeat_for_another_agent():
    squarer, planner = Agent.objects.get(name="squarer"), Agent.objects.get(name="planner")

    response = post_json(agent_bearer(squarer), f"/api/v1/agents/{planner.pk}/heartbeat")

    assert response.status_code == 403
    planner.refresh_from_db()
    assert planner.heartbeat_at is None


def test_it_lets_an_operator_beat_for_an_agent_but_not_a_viewer(operator, viewer):
    agent = Agent.objects.get(name="planner")

    assert post_json(signed_in(viewer), f"/api/v1/agents/{agent.pk}/heartbeat").status_code == 403
    assert post_json(signed_in(operator), f"/api/v1/agents/{agent.pk}/heartbeat").status_code == 200
    assert post_json(signed_in(operator), "/api/v1/agents/999999/heartbeat").json() == {
        "error": "not_found",
        "detail": "There is no agent 999999.",
    }


def test_it_keeps_a_quarantined_agent_quarantined(operator):
    agent = Agent.objects.get(name="planner")
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.QUARANTINED)

    response = post_json(signed_in(operator), f"/api/v1/agents/{agent.pk}/heartbeat")

    assert response.json()["status"] == "quarantined"


# --- The OpenAPI document ---------------------------------------------------------------


def test_it_describes_every_call_in_the_openapi_document(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]

    assert {path: set(methods) for path, methods in paths.items()} == {
        "/api/v1/health": {"get"},
        "/api/v1/domains": {"get"},
        "/api/v1/blueprints": {"get"},
        "/api/v1/domains/{slug}/runs": {"post"},
        "/api/v1/runs": {"get"},
        "/api/v1/runs/{id}": {"get"},
        "/api/v1/runs/{id}/iterations": {"get"},
        "/api/v1/runs/{id}/events": {"get"},
        "/api/v1/runs/{id}/cancel": {"post"},
        "/api/v1/runs/{id}/pause": {"post"},
        "/api/v1/runs/{id}/resume": {"post"},
        "/api/v1/agents": {"get"},
        "/api/v1/agents/{id}/heartbeat": {"post"},
        "/api/v1/interrupts": {"get", "post"},
        "/api/v1/interrupts/{id}": {"get"},
        "/api/v1/interrupts/{id}/decision": {"post"},
        "/api/v1/interrupts/{id}/claim": {"post"},
        "/api/v1/breakers": {"get"},
        "/api/v1/breakers/{id}/reset": {"post"},
        "/api/v1/breakers/{id}/force-open": {"post"},
        "/api/v1/alerts": {"get"},
        "/api/v1/alerts/{id}/acknowledge": {"post"},
        "/api/v1/halts": {"get", "post"},
        "/api/v1/halts/{id}": {"get"},
        "/api/v1/halts/{id}/lift": {"post"},
        "/api/v1/audit": {"get"},
        "/api/v1/audit/verify": {"get"},
        # Realms (DESIGN.md section 8's additions).
        "/api/v1/realms": {"get", "post"},
        "/api/v1/realms/{slug}/approve": {"post"},
        "/api/v1/realms/{slug}/refuse": {"post"},
        "/api/v1/realms/{slug}/suspend": {"post"},
        "/api/v1/realms/{slug}/grants": {"get", "put"},
    }
    run = paths["/api/v1/runs/{id}/iterations"]["get"]["responses"]["200"]
    assert run["content"]["application/json"]["schema"]["$ref"].endswith("Page_IterationOut_")


# --- A whole stack on a real worker -----------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_shows_bids_and_contributions_of_a_stack_the_worker_ran(operator, celery_worker):
    client = bearer(token_create(user=operator))
    response = post_json(
        client, "/api/v1/domains/lab/runs", {"blueprint": "lab-main", "input": {"x": 4}}
    )
    assert response.status_code == 201
    root_id = response.json()["id"]

    root = wait_for(
        lambda: LoopRun.objects.filter(pk=root_id, state__in=LoopRun.TERMINAL).first(),
        timeout=90,
    )

    assert root.state == State.SUCCEEDED, root.exit_detail
    assert "the square is 16" in json.dumps(root.result)
    micro = LoopRun.objects.get(root_id=root_id, depth=2)
    assert (micro.blueprint.name, micro.result) == ("lab-micro", 16)
    for run in LoopRun.objects.filter(root_id=root_id):
        iterations = client.get(f"/api/v1/runs/{run.pk}/iterations").json()["items"]
        assert iterations, f"run {run.pk} shows no iterations"
        for iteration in iterations:
            assert MICROSECONDS.match(iteration["started_at"])
            for row in iteration["bids"] + iteration["contributions"]:
                assert MICROSECONDS.match(row["started_at"]), row
    square = client.get(f"/api/v1/runs/{micro.pk}/iterations").json()["items"][-1]
    assert [bid["agent"] for bid in square["bids"] if bid["selected"]] == ["squarer"]
    assert [(c["agent"], c["status"], c["output"]) for c in square["contributions"]] == [
        ("squarer", "completed", 16)
    ]
    assert square["outcome"] == "validated"
