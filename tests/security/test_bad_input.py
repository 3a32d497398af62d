"""Bad input on every write path (DESIGN.md H7, CONCEPTS 46): malformed JSON, wrong types,
unknown ids, oversize bodies and wrong states each get a 4xx whose error code and sentence
name the problem, and nothing in the database changes: not a run, an interrupt, a breaker,
a halt, an alert nor an audit row (tests/security/conftest.fingerprint)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from console.auth import token_create
from loops import services
from loops.models import LoopRun
from oversight.models import Alert, CircuitBreaker, Halt
from oversight.schemas import NOT_BLANK
from oversight.services import alerts, halts, interrupts
from tests.conftest import bearer, signed_in, with_role
from tests.oversight.test_interrupts import interrupted
from tests.security.conftest import changed, fingerprint

pytestmark = pytest.mark.django_db

MALFORMED = b'{"reason": "half a body'


@dataclass
class World:
    """One of everything a write can aim at, in the states the cases need."""

    running: LoopRun
    interrupted: LoopRun
    pending: int  # an interrupt waiting for a decision
    decided: int  # an interrupt decided already
    breaker: int  # closed
    lifted: int  # a halt lifted already
    alert: int  # not acknowledged
    acknowledged: int


@pytest.fixture
def world(declared, admin) -> World:
    running = services.run_start(domain="lab", blueprint="lab-main", input={})
    run, pending = interrupted("ward-dose")
    _, other = interrupted("ward-dose")
    interrupts.interrupt_decide(
        interrupt_id=other.pk, actor=admin, decision="reject", comment="too high"
    )
    halt, _ = halts.halt_engage(actor=admin, scope="domain:arena", reason="drill")
    halts.halt_lift(halt_id=halt.pk, actor=admin, reason="drill over")
    alert = Alert.objects.create(kind="breaker.opened", title="Breaker opened")
    seen = Alert.objects.create(kind="breaker.opened", title="Breaker opened again")
    alerts.alert_acknowledge(alert_id=seen.pk, actor=admin, note="on it")
    return World(
        running=running,
        interrupted=run,
        pending=pending.pk,
        decided=other.pk,
        breaker=CircuitBreaker.objects.get(name="plant-costly-spend").pk,
        lifted=halt.pk,
        alert=alert.pk,
        acknowledged=seen.pk,
    )


def too_big() -> bytes:
    """A well-formed body one byte over the stated limit (DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    filler = "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return json.dumps({"reason": filler, "input": {"notes": filler}}).encode()


# (path, body, status, error code, words the detail must contain). The path's {…} are filled
# from the world; a body of bytes is sent as it is, anything else as JSON.
API_CASES: dict[str, tuple[str, Any, int, str, str]] = {
    # Starting a run
    "start: malformed JSON": (
        "/domains/lab/runs",
        MALFORMED,
        400,
        "invalid_json",
        "not valid JSON",
    ),
    "start: wrong types": (
        "/domains/lab/runs",
        {"blueprint": 7, "input": ["a"]},
        400,
        "invalid_request",
        "blueprint",
    ),
    "start: no blueprint": ("/domains/lab/runs", {}, 400, "invalid_request", "blueprint"),
    "start: unknown domain": (
        "/domains/atlantis/runs",
        {"blueprint": "lab-main"},
        404,
        "unknown_domain",
        "atlantis",
    ),
    "start: unknown blueprint": (
        "/domains/lab/runs",
        {"blueprint": "lab-nothing"},
        400,
        "unknown_blueprint",
        "lab-nothing",
    ),
    "start: a sub-loop": (
        "/domains/lab/runs",
        {"blueprint": "lab-sub"},
        400,
        "not_a_main_loop",
        "sub",
    ),
    "start: a main loop of another domain": (
        "/domains/lab/runs",
        {"blueprint": "ward-dose"},
        404,
        "unknown_blueprint",
        "ward-dose",
    ),
    "start: an array for a body": (
        "/domains/lab/runs",
        [{"blueprint": "lab-main"}],
        400,
        "invalid_request",
        "JSON object, not an array",
    ),
    "start: oversize": ("/domains/lab/runs", too_big, 413, "too_large", "limit"),
    # Run controls
    "pause: unknown run": ("/runs/999999/pause", None, 404, "not_found", "999999"),
    "resume: a running run": ("/runs/{running}/resume", None, 409, "wrong_state", "running"),
    "cancel: malformed JSON": ("/runs/{running}/cancel", MALFORMED, 400, "invalid_json", "JSON"),
    "cancel: [null, null] for a body": (
        "/runs/{running}/cancel",
        [None, None],
        400,
        "invalid_request",
        "JSON object, not an array",
    ),
    "cancel: null for a body": (
        "/runs/{running}/cancel",
        b"null",
        400,
        "invalid_request",
        "JSON object, not null",
    ),
    "cancel: a number for a body": (
        "/runs/{running}/cancel",
        5,
        400,
        "invalid_request",
        "JSON object, not a number",
    ),
    "cancel: reason of a wrong type": (
        "/runs/{running}/cancel",
        {"reason": ["why"]},
        400,
        "invalid_request",
        "reason",
    ),
    "heartbeat: unknown agent": ("/agents/999999/heartbeat", None, 404, "not_found", "999999"),
    # Decisions
    "decide: malformed JSON": (
        "/interrupts/{pending}/decision",
        MALFORMED,
        400,
        "invalid_json",
        "JSON",
    ),
    "decide: unknown decision": (
        "/interrupts/{pending}/decision",
        {"decision": "maybe"},
        400,
        "invalid_request",
        "decision",
    ),
    "decide: comment of a wrong type": (
        "/interrupts/{pending}/decision",
        {"decision": "reject", "comment": {"a": 1}},
        400,
        "invalid_request",
        "comment",
    ),
    "decide: reject without a reason": (
        "/interrupts/{pending}/decision",
        {"decision": "reject"},
        400,
        "reason_required",
        "comment",
    ),
    "decide: reject with a blank comment": (
        "/interrupts/{pending}/decision",
        {"decision": "reject", "comment": " \t\u3000"},
        400,
        "reason_required",
        "comment",
    ),
    "decide: modify without a payload": (
        "/interrupts/{pending}/decision",
        {"decision": "modify", "payload": None},
        400,
        "payload_required",
        "payload",
    ),
    "decide: a string for a body": (
        "/interrupts/{pending}/decision",
        "approve",
        400,
        "invalid_request",
        "JSON object, not a string",
    ),
    "decide: modify with a payload off its schema": (
        "/interrupts/{pending}/decision",
        {"decision": "modify", "payload": {"dose_mg": "lots"}},
        400,
        "invalid_payload",
        "dose_mg",
    ),
    "decide: unknown interrupt": (
        "/interrupts/999999/decision",
        {"decision": "approve"},
        404,
        "not_found",
        "999999",
    ),
    "decide: decided already": (
        "/interrupts/{decided}/decision",
        {"decision": "approve"},
        409,
        "already_decided",
        "ada",
    ),
    "decide: oversize": ("/interrupts/{pending}/decision", too_big, 413, "too_large", "limit"),
    "claim: decided already": ("/interrupts/{decided}/claim", None, 409, "already_decided", "ada"),
    # Breakers
    "reset: no reason": ("/breakers/{breaker}/reset", {}, 400, "invalid_request", "reason"),
    "reset: blank reason": (
        "/breakers/{breaker}/reset",
        {"reason": "  "},
        400,
        "reason_required",
        "reason",
    ),
    "reset: an array for a body": (
        "/breakers/{breaker}/reset",
        ["looks fine"],
        400,
        "invalid_request",
        "JSON object, not an array",
    ),
    "reset: a closed breaker": (
        "/breakers/{breaker}/reset",
        {"reason": "looks fine"},
        409,
        "wrong_state",
        "already closed",
    ),
    "reset: unknown breaker": (
        "/breakers/999999/reset",
        {"reason": "x"},
        404,
        "not_found",
        "999999",
    ),
    "force-open: reason of a wrong type": (
        "/breakers/{breaker}/force-open",
        {"reason": 12},
        400,
        "invalid_request",
        "reason",
    ),
    # Halts
    "halt: unknown scope kind": (
        "/halts",
        {"scope": "galaxy", "reason": "x"},
        400,
        "invalid_scope",
        "galaxy",
    ),
    "halt: unknown domain": (
        "/halts",
        {"scope": "domain:atlantis", "reason": "x"},
        404,
        "unknown_domain",
        "atlantis",
    ),
    "halt: unknown run": (
        "/halts",
        {"scope": "run:999999", "reason": "x"},
        404,
        "unknown_run",
        "999999",
    ),
    "halt: a run id in other digits": (
        "/halts",
        {"scope": "run:\u00b2", "reason": "x"},
        400,
        "invalid_scope",
        "run:",
    ),
    "halt: global with a colon": (
        "/halts",
        {"scope": "global:", "reason": "x"},
        400,
        "invalid_scope",
        "global:",
    ),
    "halt: no reason": ("/halts", {"scope": "domain:lab"}, 400, "invalid_request", "reason"),
    "halt: a blank reason": (
        "/halts",
        {"scope": "domain:lab", "reason": " \n"},
        400,
        "reason_required",
        "reason",
    ),
    "halt: malformed JSON": ("/halts", MALFORMED, 400, "invalid_json", "JSON"),
    "halt: oversize": ("/halts", too_big, 413, "too_large", "limit"),
    "halt: a NUL in the reason": (
        "/halts",
        {"scope": "domain:lab", "reason": "drill\u0000"},
        400,
        "invalid_request",
        "NUL",
    ),
    "lift: lifted already": (
        "/halts/{lifted}/lift",
        {"reason": "again"},
        409,
        "already_lifted",
        "lifted",
    ),
    "lift: unknown halt": ("/halts/999999/lift", {"reason": "x"}, 404, "not_found", "999999"),
    # Alerts
    "acknowledge: twice": (
        "/alerts/{acknowledged}/acknowledge",
        {},
        409,
        "already_acknowledged",
        "ada",
    ),
    "acknowledge: note of a wrong type": (
        "/alerts/{alert}/acknowledge",
        {"note": 5},
        400,
        "invalid_request",
        "note",
    ),
    "acknowledge: unknown alert": ("/alerts/999999/acknowledge", {}, 404, "not_found", "999999"),
    "acknowledge: a number for a body": (
        "/alerts/{alert}/acknowledge",
        7.018348933796827e16,
        400,
        "invalid_request",
        "JSON object, not a number",
    ),
}


def _send(client: Client, path: str, body: Any):
    if callable(body):
        body = body()
    if body is None:
        return client.post(path)
    data = body if isinstance(body, bytes) else json.dumps(body)
    return client.post(path, data, content_type="application/json")


def _ids(world: World) -> dict[str, int]:
    return {name: getattr(value, "pk", value) for name, value in vars(world).items()}


def _fill(path: str, world: World) -> str:
    return "/api/v1" + path.format(**_ids(world))


@pytest.mark.parametrize("case", sorted(API_CASES))
def test_the_api_names_what_is_wrong_and_changes_nothing(case, world, admin):
    path, body, status, code, words = API_CASES[case]
    client = bearer(token_create(user=admin))
    before = fingerprint()

    response = _send(client, _fill(path, world), body)

    assert response.status_code == status, response.content[:300]
    answer = response.json()
    assert set(answer) == {"error", "detail"}
    assert answer["error"] == code
    assert words.lower() in answer["detail"].lower()
    assert changed(before, fingerprint()) == []


def test_a_cancel_with_null_null_for_a_body_is_refused_and_the_run_goes_on(world, admin):
    """[null, null] was read as a cancel without a reason (ninja's Schema takes fields from
    any object's attributes, and RunCancel's have defaults): a 200, and the run cancelled."""
    client = bearer(token_create(user=admin))
    before = fingerprint()

    response = _send(client, _fill("/runs/{running}/cancel", world), [None, None])

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_request",
        "detail": "body: the request body must be a JSON object, not an array.",
    }
    assert changed(before, fingerprint()) == []
    world.running.refresh_from_db()
    assert world.running.state == LoopRun.State.RUNNING


def test_a_bad_body_is_named_before_a_halt_of_its_domain(world, admin):
    """A halted domain answers 423 to any start; an invalid body is told what is wrong first."""
    halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")
    client = bearer(token_create(user=admin))
    before = fingerprint()

    unknown = _send(client, _fill("/domains/depot/runs", world), {"blueprint": "depot-nothing"})
    valid = _send(client, _fill("/domains/depot/runs", world), {"blueprint": "depot-loop"})

    assert (unknown.status_code, unknown.json()["error"]) == (400, "unknown_blueprint")
    assert "depot-nothing" in unknown.json()["detail"]
    assert (valid.status_code, valid.json()["error"]) == (423, "halted")
    assert changed(before, fingerprint()) == []


def test_an_operator_cannot_halt_everything_by_another_spelling(world, django_user_model):
    """halts.halt_scope_parse reads "global:" as the global scope, which the admin check
    (the text compared with "global") did not: an operator could halt everything (H6)."""
    operator = with_role(django_user_model.objects.create_user("otto", password="pw"), "operator")
    client = bearer(token_create(user=operator))
    before = fingerprint()

    response = _send(client, _fill("/halts", world), {"scope": "global:", "reason": "x"})

    assert (response.status_code, response.json()["error"]) == (400, "invalid_scope")
    assert changed(before, fingerprint()) == []
    assert not Halt.objects.filter(kind=Halt.Kind.GLOBAL).exists()


def test_a_lift_with_a_blank_reason_is_refused_and_the_halt_stays(world, admin):
    """H1: lifting needs a reason; whitespace is none (the console's form strips it)."""
    halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")
    client = bearer(token_create(user=admin))
    before = fingerprint()

    response = _send(client, _fill(f"/halts/{halt.pk}/lift", world), {"reason": "\u2003 "})

    assert response.status_code == 400
    assert response.json()["error"] == "reason_required"
    assert "reason" in response.json()["detail"]
    assert changed(before, fingerprint()) == []


def test_the_document_calls_blank_what_the_services_strip():
    """A reason the document allows (NOT_BLANK) is one str.strip() leaves something of, for
    every character: the fuzz test's valid examples must not be refused as blank."""
    spaces = [c for c in map(chr, range(sys.maxunicode + 1)) if not re.fullmatch(NOT_BLANK, c)]

    assert spaces == [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()]


def test_the_stated_limit_is_in_the_error_and_a_body_at_the_limit_is_read(world, admin):
    """The limit is what settings state, and a body just under it is parsed as usual (so
    the 413 above is the size, not the content)."""
    client = bearer(token_create(user=admin))
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    reason = "x" * (limit - 100)

    answer = _send(client, _fill("/halts", world), {"scope": "galaxy", "reason": reason})
    too_large = _send(client, _fill("/halts", world), {"scope": "galaxy", "reason": reason * 2})

    assert answer.status_code == 400 and answer.json()["error"] == "invalid_request"
    assert too_large.status_code == 413
    assert f"{limit:,} bytes" in too_large.json()["detail"]


# Reads with bad filters: a 400 naming the parameter, never a 500 from the database.
QUERY_CASES = {
    "a NUL in a filter": ("/audit?actor=a%00b", "NUL"),
    "an offset past PostgreSQL's bigint": ("/runs?offset=83626446635266698446775517184", "offset"),
    "a time before year 1 in UTC": ("/audit?since=0001-01-01T00:00:00%2B05:00", "since"),
    "a time that is not one": ("/audit?until=yesterday", "until"),
    "a number for a time": ("/audit?until=0.5", "until"),
    "a filter given twice": ("/runs?state=running&state=paused", "query.state: given 2 times"),
    "a limit over the maximum": ("/runs?limit=100000", "limit"),
    "a run id that is not a number": ("/runs/abc", "id"),
    "a path no call has": ("/runs/1/nothing", "No API call matches"),
}


@pytest.mark.parametrize("case", sorted(QUERY_CASES))
def test_bad_filters_are_a_400_naming_them(case, admin):
    path, words = QUERY_CASES[case]

    response = bearer(token_create(user=admin)).get("/api/v1" + path)

    assert 400 <= response.status_code < 500
    assert words in response.json()["detail"]


def test_a_time_with_a_far_offset_is_read_in_utc(admin):
    """PostgreSQL refuses offsets past ±15:59; Python and ISO 8601 allow up to 23:59."""
    response = bearer(token_create(user=admin)).get(
        "/api/v1/audit?until=0611-09-27T18:40:24%2B22:28"
    )

    assert response.status_code == 200
    assert response.json()["count"] == 0


# The browser's forms: the same services behind them, the same rule. (path, form, status,
# words the answer must contain.)
FORM_CASES: dict[str, tuple[str, dict[str, str], int, str]] = {
    "halt: unknown scope kind": (
        "/oversight/halts/",
        {"scope": "galaxy", "reason": "x"},
        400,
        "galaxy",
    ),
    "halt: no reason": ("/oversight/halts/", {"scope": "domain:lab", "reason": ""}, 400, "reason"),
    "lift: lifted already": ("/oversight/halts/{lifted}/lift", {"reason": "again"}, 409, "lifted"),
    "decide: unknown decision": (
        "/oversight/inbox/{pending}/decide",
        {"decision": "maybe"},
        400,
        "decision",
    ),
    "decide: reject without a reason": (
        "/oversight/inbox/{pending}/decide",
        {"decision": "reject", "comment": ""},
        400,
        "needs a comment",
    ),
    "decide: decided already": (
        "/oversight/inbox/{decided}/decide",
        {"decision": "approve"},
        409,
        "ada",
    ),
    "reset: no reason": ("/oversight/breakers/{breaker}/reset", {"reason": ""}, 400, "reason"),
    "resume: a running run": ("/loops/runs/{running}/resume", {}, 409, "running"),
    "pause: unknown run": ("/loops/runs/999999/pause", {}, 404, ""),
    "acknowledge: twice": ("/oversight/alerts/{acknowledged}/acknowledge", {}, 409, "ada"),
    "domain pause: unknown domain": ("/loops/domains/atlantis/pause", {}, 404, ""),
    "domain pause: a NUL in the reason": (
        "/loops/domains/lab/pause",
        {"reason": "drill\x00"},
        400,
        "NUL",
    ),
}


@pytest.mark.parametrize("case", sorted(FORM_CASES))
def test_the_forms_name_what_is_wrong_and_change_nothing(case, world, admin):
    path, form, status, words = FORM_CASES[case]
    client = signed_in(admin)
    before = fingerprint()

    response = client.post(path.format(**_ids(world)), form)

    assert response.status_code == status, response.content[:300]
    assert words.lower() in response.content.decode().lower()
    assert changed(before, fingerprint()) == []


def test_a_halt_without_a_reason_is_not_written_and_the_halt_table_stays_as_it_was(world, admin):
    """The one case an operator would fear most, spelled out: a rejected halt request leaves
    no active halt behind."""
    client = bearer(token_create(user=admin))

    response = _send(client, _fill("/halts", world), {"scope": "global", "reason": ""})

    assert response.status_code == 400
    assert not Halt.objects.filter(lifted_at__isnull=True).exists()
