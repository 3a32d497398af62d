"""Agents' calls to the API are signed (common.signing, console.auth): a request made with an
agent's token needs X-Console-Timestamp and X-Console-Signature under the agent's shared
secret, on a timestamp within 300 s, seen once. A refused call changes nothing (H7)."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from common.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, shared_secret, signed_headers
from console.auth import token_create
from loops import services
from loops.models import Agent, ApiToken
from oversight.models import Interrupt
from tests.conftest import bearer, post_json, signed_bearer, with_role
from tests.security.conftest import changed, fingerprint

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


@pytest.fixture
def doser() -> Agent:
    return Agent.objects.get(domain__slug="ward", name="doser")


def _send(token: str, path: str, body: bytes, headers: dict[str, str]):
    """POST exactly these bytes with these headers, as an agent's own HTTP client would."""
    client = Client(headers={"Authorization": f"Bearer {token}", **headers})
    return client.post(path, body, content_type="application/json")


def _interrupt_body() -> bytes:
    run = services.run_start(domain="ward", blueprint="ward-dose", input={})
    return json.dumps({"run": run.pk, "reason": "the chart looks wrong"}).encode()


def _assert_refused(response, code: str, words: str) -> None:
    assert response.status_code == 401, response.content
    body = response.json()
    assert set(body) == {"error", "detail"}
    # console.auth.SignatureRefused carries the code; console/api.py renders HttpError codes.
    assert body["error"] in (code, "http_error")
    assert words in body["detail"], body["detail"]


def test_it_takes_a_signed_interrupt(doser):
    token, body = token_create(agent=doser), _interrupt_body()

    response = _send(token, "/api/v1/interrupts", body, signed_headers(_secret(doser), body))

    assert response.status_code == 201, response.json()
    assert Interrupt.objects.get(pk=response.json()["id"]).agent == doser
    assert ApiToken.objects.get(agent=doser).last_used_at is not None


def test_it_takes_a_signed_heartbeat(doser):
    response = post_json(_signed(doser), f"/api/v1/agents/{doser.pk}/heartbeat")

    doser.refresh_from_db()
    assert response.status_code == 200
    assert doser.heartbeat_at is not None


def _secret(agent: Agent) -> str:
    return shared_secret(agent.config)


def _signed(agent: Agent):
    return signed_bearer(token_create(agent=agent), _secret(agent))


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("no headers", "signature_missing", "X-Console-Timestamp and X-Console-Signature missing"),
        ("no signature", "signature_missing", "X-Console-Signature missing"),
        ("wrong secret", "signature_invalid", "does not match"),
        ("tampered body", "signature_invalid", "does not match"),
        ("not a number", "timestamp_invalid", "whole Unix seconds"),
        ("stale", "timestamp_expired", "s old; the console accepts 300 s either way"),
        ("future", "timestamp_in_future", "ahead of the console's clock; the console accepts 300"),
    ],
)
def test_it_refuses_a_badly_signed_interrupt_and_writes_nothing(doser, case, code, words):
    token, body = token_create(agent=doser), _interrupt_body()
    now = time.time()
    sent, headers = body, signed_headers(_secret(doser), body, now=now)
    if case == "no headers":
        headers = {}
    elif case == "no signature":
        del headers[SIGNATURE_HEADER]
    elif case == "wrong secret":
        headers = signed_headers("not-the-secret", body, now=now)
    elif case == "tampered body":
        sent = body.replace(b"looks wrong", b"looks right")
    elif case == "not a number":
        headers[TIMESTAMP_HEADER] = "yesterday"
    elif case == "stale":
        headers = signed_headers(_secret(doser), body, now=now - 301)
    elif case == "future":
        headers = signed_headers(_secret(doser), body, now=now + 400)
    before = fingerprint()

    response = _send(token, "/api/v1/interrupts", sent, headers)

    _assert_refused(response, code, words)
    assert not Interrupt.objects.exists()
    assert changed(before, fingerprint()) == []
    assert ApiToken.objects.get(agent=doser).last_used_at is None  # not even that


def test_it_accepts_a_timestamp_at_the_edge_of_the_window(doser):
    token, body = token_create(agent=doser), _interrupt_body()
    headers = signed_headers(_secret(doser), body, now=time.time() - 295)

    assert _send(token, "/api/v1/interrupts", body, headers).status_code == 201


def test_it_refuses_an_exact_replay_of_an_accepted_request(doser):
    token, body = token_create(agent=doser), _interrupt_body()
    headers = signed_headers(_secret(doser), body)
    accepted = _send(token, "/api/v1/interrupts", body, headers)
    assert accepted.status_code == 201
    before = fingerprint()

    replayed = _send(token, "/api/v1/interrupts", body, headers)

    _assert_refused(replayed, "signature_replayed", "already accepted")
    assert Interrupt.objects.count() == 1
    assert changed(before, fingerprint()) == []


def test_it_refuses_a_replayed_heartbeat_and_keeps_the_first_beat(doser):
    token = token_create(agent=doser)
    headers = signed_headers(_secret(doser), b"")
    path = f"/api/v1/agents/{doser.pk}/heartbeat"
    assert _send(token, path, b"", headers).status_code == 200
    beat = Agent.objects.get(pk=doser.pk).heartbeat_at

    replayed = _send(token, path, b"", headers)

    _assert_refused(replayed, "signature_replayed", "300 s window")
    assert Agent.objects.get(pk=doser.pk).heartbeat_at == beat


def test_it_refuses_a_signed_heartbeat_for_a_token_of_another_agent(doser):
    # Signed with doser's secret, sent with another agent's token: that agent's secret
    # decides, so the signature does not match.
    other = Agent.objects.get(domain__slug="lab", name="squarer")
    Agent.objects.filter(pk=other.pk).update(config={"secret": "squarers-own-secret"})
    headers = signed_headers(_secret(doser), b"")

    response = _send(
        token_create(agent=other), f"/api/v1/agents/{other.pk}/heartbeat", b"", headers
    )

    _assert_refused(response, "signature_invalid", "does not match")
    assert Agent.objects.get(pk=other.pk).heartbeat_at is None


def test_it_refuses_an_agent_without_a_secret_and_names_it(doser):
    Agent.objects.filter(pk=doser.pk).update(config={"implementation": "ward.doser"})
    token, path = token_create(agent=doser), f"/api/v1/agents/{doser.pk}/heartbeat"

    response = _send(token, path, b"", signed_headers("anything", b""))

    _assert_refused(response, "agent_secret_missing", "Agent ward/doser has no signing secret")
    assert Agent.objects.get(pk=doser.pk).heartbeat_at is None


def test_it_names_the_unset_environment_variable_of_an_agents_secret(doser):
    config = {"implementation": "ward.doser", "secret_env": "NO_SUCH_SECRET_VARIABLE"}
    Agent.objects.filter(pk=doser.pk).update(config=config)

    response = _send(token_create(agent=doser), f"/api/v1/agents/{doser.pk}/heartbeat", b"", {})

    _assert_refused(response, "agent_secret_missing", "NO_SUCH_SECRET_VARIABLE is unset")


def test_it_verifies_with_a_secret_written_in_the_config(doser):
    Agent.objects.filter(pk=doser.pk).update(config={"secret": "written-down"})
    client = signed_bearer(token_create(agent=doser), "written-down")

    assert post_json(client, f"/api/v1/agents/{doser.pk}/heartbeat").status_code == 200


def test_it_signs_a_get_over_the_empty_body(doser):
    # An agent holds no role: past the signature, the read is refused by role (403), not 401.
    signed = _signed(doser).get("/api/v1/runs")
    unsigned = Client(headers={"Authorization": f"Bearer {token_create(agent=doser)}"}).get(
        "/api/v1/runs"
    )

    assert signed.status_code == 403
    _assert_refused(unsigned, "signature_missing", "not signed")


def test_a_users_token_needs_no_signature(django_user_model):
    viewer = with_role(django_user_model.objects.create_user("vera"), "viewer")

    response = bearer(token_create(user=viewer)).get("/api/v1/runs")

    assert response.status_code == 200
