"""The overview's domain cards and the halt pages (DESIGN.md H1) through the Django client."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from loops import engine, services
from loops.models import Domain, LoopRun
from oversight.models import CircuitBreaker, Halt
from tests.conftest import person, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


def _client(name: str, role: str) -> Client:
    return signed_in(person(name, role, email=f"{name}@example.org"))


def _start(n: int = 1) -> list[LoopRun]:
    return [services.run_start(domain="depot", blueprint="depot-loop", input={}) for _ in range(n)]


def _card(html: str, slug: str) -> str:
    start = html.index(f'id="domain-{slug}-card"')
    return html[start : html.index("</section>", start)]


def test_cards_show_live_runs_iterations_breakers_and_halt_state():
    runs = _start(2)
    engine.advance(run_id=runs[0].pk)
    CircuitBreaker.objects.create(
        name="depot-calls",
        scope=CircuitBreaker.Scope.DOMAIN,
        domain=Domain.objects.get(slug="depot"),
        metric=CircuitBreaker.Metric.CONSECUTIVE_FAILURES,
        threshold=3,
        state=CircuitBreaker.State.OPEN,
    )

    card = _card(_client("vera", "viewer").get("/").content.decode(), "depot")

    assert '<dd class="runs-live">2</dd>' in card
    assert '<dd class="iterations">0</dd>' not in card  # the step broadcast an iteration
    assert '<dd class="open-breakers">1</dd>' in card
    assert '<dd class="pending-approvals"><a href="/oversight/inbox/?domain=depot"' in card
    assert 'aria-label="0 pending approvals in Depot">0</a></dd>' in card
    assert '<a class="domain-link" href="/loops/domains/depot/">Depot</a>' in card
    assert '<dd class="halted">no</dd>' in card
    assert "<polyline points=" in card


def test_the_overview_costs_the_same_queries_for_3_or_30_runs():
    client = _client("vera", "viewer")
    _start(3)
    client.get("/")  # warm: sessions, permissions caches
    with CaptureQueriesContext(connection) as few:
        assert client.get("/").status_code == 200
    _start(27)
    with CaptureQueriesContext(connection) as many:
        assert client.get("/").status_code == 200
    assert len(many) == len(few)


def test_a_viewer_sees_no_halt_controls_and_gets_403_when_posting_anyway():
    client = _client("vera", "viewer")

    html = client.get("/").content.decode()
    assert "Halt domain" not in html and "Halt everything" not in html
    assert "can-lift" not in _body_classes(html)
    assert client.get("/oversight/halts/new?scope=domain:depot").status_code == 403
    response = client.post("/oversight/halts/", {"scope": "domain:depot", "reason": "x"})
    assert response.status_code == 403
    assert not Halt.objects.exists()


def test_an_operator_halts_a_domain_after_the_confirmation():
    run = _start()[0]
    client = _client("otto", "operator")
    html = client.get("/").content.decode()
    assert "/oversight/halts/new?scope=domain:depot" in html
    assert "Halt everything" not in html

    form = client.get("/oversight/halts/new?scope=domain:depot").content.decode()
    assert "domain:depot" in form and 'name="reason"' in form
    response = client.post("/oversight/halts/", {"scope": "domain:depot", "reason": "drill"})

    assert response.status_code == 302 and response["Location"] == "/"
    halt = Halt.objects.get()
    assert (halt.scope, halt.reason, halt.created_by.username) == ("domain:depot", "drill", "otto")
    run.refresh_from_db()
    assert run.state == LoopRun.State.HALTED
    html = client.get("/").content.decode()
    assert "HALTED: domain:depot" in html and "still in flight" in html
    assert '<dd class="halted">yes</dd>' in _card(html, "depot")
    assert 'data-state="halted"' in _card(html, "depot")


def test_a_halt_without_a_reason_is_refused_and_changes_nothing():
    response = _client("otto", "operator").post(
        "/oversight/halts/", {"scope": "domain:depot", "reason": "  "}
    )
    assert response.status_code == 400
    assert "This field is required" in response.content.decode()
    assert not Halt.objects.exists()


def test_an_htmx_halt_answers_with_the_banner():
    response = _client("otto", "operator").post(
        "/oversight/halts/", {"scope": "domain:depot", "reason": "drill"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200
    assert 'id="halt-banner"' in response.content.decode()


def test_an_operator_cannot_halt_everything():
    client = _client("otto", "operator")
    assert client.get("/oversight/halts/new?scope=global").status_code == 403
    assert client.post("/oversight/halts/", {"scope": "global", "reason": "x"}).status_code == 403
    assert not Halt.objects.exists()


def test_an_admin_lifts_a_domain_halt_with_a_reason():
    run = _start()[0]
    _client("otto", "operator").post("/oversight/halts/", {"scope": "domain:depot", "reason": "d"})
    halt = Halt.objects.get()
    assert _client("olga", "operator").get(f"/oversight/halts/{halt.pk}/lift").status_code == 403
    admin = _client("ada", "admin")
    assert "can-lift" in _body_classes(admin.get("/").content.decode())
    assert 'name="reason"' in admin.get(f"/oversight/halts/{halt.pk}/lift").content.decode()

    assert admin.post(f"/oversight/halts/{halt.pk}/lift", {"reason": ""}).status_code == 400
    response = admin.post(f"/oversight/halts/{halt.pk}/lift", {"reason": "drill over"})

    assert response.status_code == 302
    halt.refresh_from_db()
    assert halt.lifted_at is not None and halt.lifted_by.username == "ada"
    run.refresh_from_db()
    assert run.state != LoopRun.State.HALTED
    html = admin.get("/").content.decode()
    assert "HALTED:" not in html and '<dd class="halted">no</dd>' in _card(html, "depot")


def test_a_global_lift_needs_a_second_admin():
    ada, bea = _client("ada", "admin"), _client("bea", "admin")
    assert "Halt everything" in ada.get("/").content.decode()
    assert ada.post("/oversight/halts/", {"scope": "global", "reason": "all"}).status_code == 302
    halt = Halt.objects.get(scope="global")
    assert '<dd class="halted">yes</dd>' in _card(ada.get("/").content.decode(), "lab")

    first = ada.post(f"/oversight/halts/{halt.pk}/lift", {"reason": "looks fine"})
    assert first.status_code == 200 and "awaiting a second admin" in first.content.decode()
    again = ada.post(f"/oversight/halts/{halt.pk}/lift", {"reason": "me again"})
    assert again.status_code == 409
    halt.refresh_from_db()
    assert halt.is_active

    assert bea.post(f"/oversight/halts/{halt.pk}/lift", {"reason": "agreed"}).status_code == 302
    halt.refresh_from_db()
    assert not halt.is_active and halt.confirmed_by.username == "bea"


def _body_classes(html: str) -> list[str]:
    """What the page's CSS keys its per-role controls on (e.g. body.can-lift)."""
    found = re.search(r'<body[^>]*\sclass="([^"]*)"', html)
    return found.group(1).split() if found else []
