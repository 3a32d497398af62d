"""Acknowledging an alert (oversight/services/alerts.py alert_acknowledge): from the live feed
(oversight/views/alerts.py) and the API, who may, what a late second acknowledgement hears,
the delete fragment on a real signed-in websocket (also for the alerts a settled decision
retires), and the failure-pattern advisory re-arming
after an acknowledgement (oversight/services/patterns.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common.refusals import Refused
from console.asgi import application
from console.auth import token_create
from console.roles import roles_sync
from loops.declare import sync_declarations
from loops.models import Agent
from oversight import fragments, selectors
from oversight.models import Alert, AuditEvent, Interrupt
from oversight.services.alerts import alert_acknowledge, alerts_retire
from oversight.services.breakers import breakers_sync
from oversight.services.patterns import failures_record
from tests.conftest import agent_bearer, bearer, person, post_json, signed_in

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def _url(alert_id: int) -> str:
    return f"/oversight/alerts/{alert_id}/acknowledge"


def _api_url(alert_id: int) -> str:
    return f"/api/v1/alerts/{alert_id}/acknowledge"


def _user(django_user_model, username: str, role: str):
    roles_sync()  # the role groups, whether or not this test's database was flushed
    return person(username, role)


def _alert(title: str = "Breaker plant-flaky opened", **fields) -> Alert:
    # Written directly: alert_raise would enqueue notifications that no test here sends.
    return Alert.objects.create(**{"kind": "breaker.opened", "title": title, **fields})


def _audits(alert: Alert) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(target_type="alert", target_id=str(alert.pk)))


# The personas of tests/conftest.py, by the names this module's tests call them.


@pytest.fixture
def otto(operator):
    return operator


@pytest.fixture
def vera(viewer):
    return viewer


# --- The feed (htmx view) -----------------------------------------------------------------


def test_it_acknowledges_from_the_feed(otto):
    alert = _alert()

    answer = signed_in(otto).post(_url(alert.pk), headers=HTMX)

    assert answer.status_code == 200
    html = answer.content.decode()
    assert f'<article id="alert-{alert.pk}" hx-swap-oob="delete"></article>' in html
    alert.refresh_from_db()
    assert alert.acknowledged_by == otto and alert.acknowledged_at is not None
    [audit] = _audits(alert)
    assert (audit.verb, audit.actor, audit.actor_name) == ("alert.acknowledged", otto, "otto")
    assert audit.before == {"acknowledged_at": None}
    assert audit.after["acknowledged_by"] == "otto"
    assert alert not in selectors.recent_alerts()


def test_a_second_acknowledgement_names_the_first(django_user_model, otto):
    wanda = _user(django_user_model, "wanda", "operator")
    alert = _alert()
    first = alert_acknowledge(alert_id=alert.pk, actor=wanda)

    answer = signed_in(otto).post(_url(alert.pk), headers=HTMX)

    assert answer.status_code == 200  # htmx 2 would not swap a 409
    html = answer.content.decode()
    detail = f"already acknowledged by wanda at {first.acknowledged_at.isoformat()}"
    assert detail in html
    assert f'id="alert-{alert.pk}"' in html and 'hx-swap-oob="true"' in html
    assert "already_acknowledged" in answer.headers["HX-Trigger"]
    alert.refresh_from_db()
    assert (alert.acknowledged_by, alert.acknowledged_at) == (wanda, first.acknowledged_at)
    assert len(_audits(alert)) == 1


def test_a_late_acknowledgement_without_htmx_hears_409(django_user_model, otto):
    alert = _alert()
    alert_acknowledge(alert_id=alert.pk, actor=_user(django_user_model, "wanda", "operator"))

    answer = signed_in(otto).post(_url(alert.pk))

    assert answer.status_code == 409
    assert "already acknowledged by wanda" in answer.content.decode()


def test_it_redirects_without_htmx(otto):
    alert = _alert()

    answer = signed_in(otto).post(_url(alert.pk))

    assert answer.status_code == 302
    assert Alert.objects.get(pk=alert.pk).acknowledged_by == otto


def test_it_requires_the_acknowledge_permission(vera):
    alert = _alert()

    answer = signed_in(vera).post(_url(alert.pk), headers=HTMX)

    assert answer.status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None and alert.acknowledged_by is None
    assert _audits(alert) == []
    assert alert in selectors.recent_alerts()


def test_it_answers_404_for_an_unknown_alert(otto):
    assert signed_in(otto).post(_url(987654), headers=HTMX).status_code == 404


def test_it_rejects_get(otto):
    alert = _alert()

    assert signed_in(otto).get(_url(alert.pk)).status_code == 405
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None


def test_the_pushed_alert_carries_the_button_but_no_token_or_user():
    html = fragments.alert(_alert())

    assert 'class="alert-ack"' in html
    assert 'hx-post="/oversight/alerts/' in html
    assert "csrf" not in html.lower()


def test_the_page_shows_the_button_only_to_those_allowed(otto, vera):
    _alert()

    operator_page = signed_in(otto).get("/").content.decode()
    viewer_page = signed_in(vera).get("/").content.decode()

    assert "can-ack" in operator_page and 'class="alert-ack"' in operator_page
    assert "can-ack" not in viewer_page  # the button is there, hidden by CSS; the view refuses
    # Nothing but articles in the feed, so it is :empty (hidden) once they are all deleted.
    assert 'aria-label="Alerts"><article id="alert-' in operator_page
    assert "</article></section>" in operator_page


# --- The API ------------------------------------------------------------------------------


def test_the_api_lists_unacknowledged_alerts_newest_first(otto, vera):
    older, newer, gone = _alert("older"), _alert("newer"), _alert("gone")
    alert_acknowledge(alert_id=gone.pk, actor=otto)

    body = signed_in(vera).get("/api/v1/alerts").json()

    assert [item["id"] for item in body["items"]] == [newer.pk, older.pk]
    assert body["count"] == 2 and body["next"] is None
    assert body["items"][0]["acknowledged_by"] is None
    done = signed_in(vera).get("/api/v1/alerts?acknowledged=true").json()
    assert [(i["id"], i["acknowledged_by"]) for i in done["items"]] == [(gone.pk, "otto")]


def test_the_api_list_is_paged(vera):
    alerts = [_alert(f"alert {n}") for n in range(3)]

    body = signed_in(vera).get("/api/v1/alerts?limit=2").json()

    assert [item["id"] for item in body["items"]] == [alerts[2].pk, alerts[1].pk]
    assert body["count"] == 3 and "offset=2" in body["next"]


def test_the_api_acknowledges_and_a_second_one_gets_409(django_user_model, otto):
    alert = _alert()

    first = post_json(bearer(token_create(user=otto)), _api_url(alert.pk), {"note": "seen"})

    assert first.status_code == 200
    assert first.json()["id"] == alert.pk and first.json()["acknowledged_by"] == "otto"
    [audit] = _audits(alert)
    assert (audit.verb, audit.actor_name, audit.note) == ("alert.acknowledged", "otto", "seen")
    assert alert not in selectors.recent_alerts()

    wanda = _user(django_user_model, "wanda", "operator")
    second = post_json(signed_in(wanda), _api_url(alert.pk))

    assert second.status_code == 409
    assert second.json()["error"] == "already_acknowledged"
    assert "already acknowledged by otto at " in second.json()["detail"]
    assert len(_audits(alert)) == 1


def test_the_api_refuses_a_viewer_and_changes_nothing(vera):
    alert = _alert()

    response = post_json(signed_in(vera), _api_url(alert.pk))

    assert response.status_code == 403
    assert response.json() == {"error": "forbidden", "detail": "This needs the operator role."}
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None
    assert _audits(alert) == []


def test_the_api_refuses_an_agent_token():
    sync_declarations()
    alert = _alert()
    agent = Agent.objects.get(name="squarer")

    response = post_json(agent_bearer(agent), _api_url(alert.pk))

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None


def test_the_api_answers_404_for_an_unknown_alert(otto):
    response = post_json(signed_in(otto), _api_url(987654))

    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "There is no alert 987654."}


def test_the_api_rejects_an_oversize_note(otto):
    alert = _alert()

    response = post_json(signed_in(otto), _api_url(alert.pk), {"note": "x" * 2001})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None


def test_the_api_documents_the_alert_calls(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]

    assert "/api/v1/alerts" in paths and "/api/v1/alerts/{id}/acknowledge" in paths


# --- Races and pushes (committed rows: a second connection, a real websocket) -------------


@pytest.mark.django_db(transaction=True)
def test_exactly_one_of_two_concurrent_acknowledgements_wins(django_user_model):
    people = [_user(django_user_model, name, "operator") for name in ("ada", "bob")]
    alert = _alert()
    barrier, outcomes = threading.Barrier(2), []

    def acknowledge(person) -> None:
        barrier.wait()
        try:
            alert_acknowledge(alert_id=alert.pk, actor=person)
            outcomes.append("won")
        except Refused as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=acknowledge, args=(p,)) for p in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == ["already_acknowledged", "won"]
    assert len(_audits(alert)) == 1


@pytest.fixture
def session_cookie(client, django_user_model) -> bytes:
    client.force_login(_user(django_user_model, "watcher", "viewer"))
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def _console(session_cookie: bytes) -> WebsocketCommunicator:
    """A signed-in console's websocket, connected."""
    headers = [
        (b"host", b"localhost"),
        (b"cookie", session_cookie),
        (b"origin", b"http://localhost"),
    ]
    communicator = WebsocketCommunicator(application, "/ws/console/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_every_console_hears_the_alert_leave(session_cookie, django_user_model):
    """A viewer's console (it cannot acknowledge) still loses the alert someone else took."""
    communicator = await _console(session_cookie)

    def acknowledge() -> Alert:
        alert = _alert()
        return alert_acknowledge(
            alert_id=alert.pk, actor=_user(django_user_model, "ada", "operator")
        )

    alert = await sync_to_async(acknowledge)()

    marker = f'id="alert-{alert.pk}"'
    async with asyncio.timeout(10):  # liveness beats of a test worker may come first
        while marker not in (message := await communicator.receive_from(timeout=10)):
            pass
    await communicator.disconnect()
    assert f'<article id="alert-{alert.pk}" hx-swap-oob="delete"></article>' in message
    assert "csrf" not in message.lower()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_every_console_hears_a_settled_decisions_alerts_leave(session_cookie):
    """alerts_retire (issue 17): the raised alert and its reminder leave every feed in one
    push; the same interrupt's expiry alert and another interrupt's alert stay."""
    communicator = await _console(session_cookie)

    def retire() -> tuple[list[Alert], list[Alert], list[int]]:
        def on(target_id: str, kind: str) -> Alert:
            return _alert(kind=kind, target_type="interrupt", target_id=target_id)

        asking = [on("4242", "interrupt.raised"), on("4242", "interrupt.reminded")]
        staying = [on("4242", "interrupt.expired"), on("4243", "interrupt.raised")]
        with transaction.atomic():
            retired = alerts_retire(target=Interrupt(pk=4242), why="interrupt 4242 was decided")
        return asking, staying, retired

    asking, staying, retired = await sync_to_async(retire)()

    assert sorted(retired) == sorted(alert.pk for alert in asking)
    markers = [f'<article id="alert-{a.pk}" hx-swap-oob="delete"></article>' for a in asking]
    async with asyncio.timeout(10):  # liveness beats of a test worker may come first
        while markers[0] not in (message := await communicator.receive_from(timeout=10)):
            pass
    await communicator.disconnect()
    assert markers[1] in message  # one push for both
    feed = await sync_to_async(selectors.recent_alerts)()
    assert [alert.pk for alert in feed if alert.target_id] == [a.pk for a in reversed(staying)]


# --- The failure-pattern advisory re-arms (oversight/services/patterns.py) ----------------


def test_the_failure_advisory_comes_back_only_after_an_acknowledgement(otto):
    sync_declarations()
    breakers_sync()
    agent = Agent.objects.get(name="flaky")
    threshold = settings.FAILURE_PATTERN_THRESHOLD
    now = timezone.now()

    def fail(times: int) -> list[Alert]:
        for _ in range(times):
            with transaction.atomic():
                failures_record([(agent.pk, "timeout", "no answer after 3 s")], now=now)
        return list(Alert.objects.filter(kind="failure.repeated").order_by("id"))

    [advisory] = fail(threshold + 2)  # one advisory, however often it repeats
    signed_in(otto).post(_url(advisory.pk), headers=HTMX)

    assert fail(threshold - 1) == [advisory]  # a fresh streak, below the threshold
    first, second = fail(1)  # the streak reaches it: a new advisory
    assert first == advisory and second.acknowledged_at is None
    assert second.body.startswith(f"{threshold} identical failures")
    assert selectors.recent_alerts() == [second]
