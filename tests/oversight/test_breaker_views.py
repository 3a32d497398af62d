"""The breakers page: what viewers and operators see, and reset / force-open through it."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from loops.models import Domain
from oversight.models import AuditEvent, CircuitBreaker

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("roles")]
HTMX = {"HTTP_HX_REQUEST": "true"}


def make_breakers(count: int, *, state: str = "open") -> list[CircuitBreaker]:
    domain, _ = Domain.objects.get_or_create(slug="viewplant", defaults={"name": "View plant"})
    start = CircuitBreaker.objects.count()
    now = time.time()
    made = []
    for i in range(start, start + count):
        breaker = CircuitBreaker.objects.create(
            name=f"b{i}",
            scope="domain",
            domain=domain,
            metric="error_rate",
            threshold=0.5,
            state=state,
            samples=[[now - 5 + k, k % 2 == 0, 0.1, 100.0, None] for k in range(5)],
            last_reason="too many failures",
        )
        for verb in ("breaker.opened", "breaker.half_opened", "breaker.opened"):
            AuditEvent.objects.create(
                actor_name="system", verb=verb, target_type="breaker", target_id=str(breaker.pk)
            )
        made.append(breaker)
    return made


def test_a_viewer_sees_breakers_charts_and_history_but_no_controls(client, viewer):
    (breaker,) = make_breakers(1)
    response = client.get(reverse("oversight:breakers"))
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="breaker-{breaker.pk}-row"' in html
    assert 'class="breaker-chart"' in html and 'class="threshold"' in html
    assert "breaker.half_opened" in html
    assert reverse("oversight:breaker-reset", args=[breaker.pk]) not in html
    assert "Force open" not in html


def test_an_operator_sees_reset_and_force_open_forms(client, operator):
    (breaker,) = make_breakers(1)
    html = client.get(reverse("oversight:breakers")).content.decode()
    assert reverse("oversight:breaker-reset", args=[breaker.pk]) in html
    assert reverse("oversight:breaker-force-open", args=[breaker.pk]) in html


def test_a_user_without_a_role_gets_403(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("nobody", password="pw"))
    assert client.get(reverse("oversight:breakers")).status_code == 403


@pytest.mark.parametrize("name", ["oversight:breaker-reset", "oversight:breaker-force-open"])
def test_a_viewer_posting_a_forged_form_gets_403_and_nothing_changes(client, viewer, name):
    (breaker,) = make_breakers(1)
    events = AuditEvent.objects.count()
    response = client.post(reverse(name, args=[breaker.pk]), {"reason": "forged"}, **HTMX)
    assert response.status_code == 403
    breaker.refresh_from_db()
    assert (breaker.state, breaker.forced) == ("open", False)
    assert AuditEvent.objects.count() == events


def test_a_reset_without_a_reason_shows_the_error_and_changes_nothing(client, operator):
    (breaker,) = make_breakers(1)
    events = AuditEvent.objects.count()
    url = reverse("oversight:breaker-reset", args=[breaker.pk])
    response = client.post(url, {"reason": "  "}, **HTMX)
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert client.post(url, {}).status_code == 400
    breaker.refresh_from_db()
    assert breaker.state == "open"
    assert AuditEvent.objects.count() == events


def test_a_reset_closes_the_breaker_and_is_audited(client, operator):
    (breaker,) = make_breakers(1)
    url = reverse("oversight:breaker-reset", args=[breaker.pk])
    response = client.post(url, {"reason": "fixed the pump"}, **HTMX)
    assert response.status_code == 200
    assert f'id="breaker-{breaker.pk}-body"' in response.content.decode()
    breaker.refresh_from_db()
    assert breaker.state == "closed"
    event = AuditEvent.objects.filter(verb="breaker.reset").get()
    assert (event.actor_name, event.note, event.target_id) == (
        "otto",
        "fixed the pump",
        str(breaker.pk),
    )


def test_a_rejected_reset_answers_200_with_the_truth_and_a_notice(client, operator):
    (breaker,) = make_breakers(1, state="closed")
    url = reverse("oversight:breaker-reset", args=[breaker.pk])
    response = client.post(url, {"reason": "again"}, **HTMX)
    assert response.status_code == 200
    assert "already closed" in response.headers["HX-Trigger"]
    assert client.post(url, {"reason": "again"}).status_code == 302


def test_force_open_opens_it_forced_and_a_plain_post_redirects(client, operator):
    (breaker,) = make_breakers(1, state="closed")
    url = reverse("oversight:breaker-force-open", args=[breaker.pk])
    response = client.post(url, {"reason": "maintenance"})
    assert response.status_code == 302
    breaker.refresh_from_db()
    assert (breaker.state, breaker.forced) == ("open", True)
    assert AuditEvent.objects.filter(verb="breaker.forced_open", note="maintenance").exists()


def test_the_page_query_count_does_not_grow_with_breakers(client, operator):
    make_breakers(2)
    client.get(reverse("oversight:breakers"))  # warm caches (content types, sessions)
    with CaptureQueriesContext(connection) as small:
        assert client.get(reverse("oversight:breakers")).status_code == 200
    make_breakers(12)
    with CaptureQueriesContext(connection) as large:
        assert client.get(reverse("oversight:breakers")).status_code == 200
    assert len(large) == len(small)


def test_the_pushed_row_draws_the_same_chart_without_a_request():
    from oversight import fragments, selectors

    (breaker,) = make_breakers(1)
    html = fragments.breaker_row(selectors.breaker_get_for_row(breaker.pk))
    assert 'hx-swap-oob="true"' in html and 'class="breaker-chart"' in html
