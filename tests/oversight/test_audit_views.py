"""The audit log page: newest first, filters by who, what, scope and time, 400 on bad ones."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from oversight.models import AuditEvent

# Every test is vera's, the viewer of tests/conftest.py, signed in on the test's client.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("viewer")]
URL = "/oversight/audit/"


def event(verb: str, actor: str = "system", target: tuple[str, str] = ("run", "1"), at=None):
    return AuditEvent.objects.create(
        at=at or timezone.now(),
        actor_name=actor,
        verb=verb,
        target_type=target[0],
        target_id=target[1],
        note=f"note of {verb}",
    )


def rows(client, **params) -> list[str]:
    response = client.get(URL, params)
    assert response.status_code == 200
    html = response.content.decode()
    return [v for v in ("halt.engaged", "halt.lifted", "breaker.reset", "run.paused") if v in html]


def test_the_url_is_named():
    assert reverse("oversight:audit") == URL


def test_it_lists_newest_first_and_filters_by_who_what_scope_and_time(client):
    old = timezone.make_aware(datetime(2026, 1, 10, 12))
    event("halt.engaged", "otto", ("halt", "3"), at=old)
    event("halt.lifted", "ada", ("halt", "3"))
    event("breaker.reset", "otto", ("breaker", "7"))
    event("run.paused", "system", ("run", "9"))
    html = client.get(URL).content.decode()
    assert html.index("run.paused") < html.index("halt.engaged")
    assert rows(client, actor="otto") == ["halt.engaged", "breaker.reset"]
    assert rows(client, verb="halt.") == ["halt.engaged", "halt.lifted"]
    assert rows(client, verb="halt.lifted") == ["halt.lifted"]
    assert rows(client, target_type="breaker", target_id="7") == ["breaker.reset"]
    assert rows(client, until="2026-01-10") == ["halt.engaged"]
    today = timezone.localdate()
    assert "halt.engaged" not in rows(client, since=today.isoformat())
    assert rows(client, since=(today + timedelta(days=1)).isoformat()) == []


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "2026-13-01"},
        {"since": "2026-02-02", "until": "2026-02-01"},
    ],
)
def test_a_bad_filter_is_a_clear_400(client, params):
    response = client.get(URL, params)
    assert response.status_code == 400
    html = response.content.decode()
    assert "These filters cannot be used" in html
    assert 'role="alert"' in html


def test_a_user_without_a_role_gets_403(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("nobody", password="pw"))
    assert client.get(URL).status_code == 403


def test_it_paginates_and_the_query_count_does_not_grow(client):
    for i in range(3):
        event("run.paused", target=("run", str(i)))
    client.get(URL)
    with CaptureQueriesContext(connection) as small:
        client.get(URL)
    for i in range(120):
        event("run.paused", target=("run", str(i)))
    with CaptureQueriesContext(connection) as large:
        response = client.get(URL, {"page": 2})
    assert len(large) == len(small)
    html = response.content.decode()
    assert "page 2 of 3" in html and "Newer" in html and "Older" in html
