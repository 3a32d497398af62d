"""The agent adapters (CONCEPTS 5, 33, 34): remote HTTP agents and OpenAI-compatible LLM
agents, each against a real HTTP server on loopback started by the test
(tests/loops/loopback.py), through the engine stepped in this process."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.utils import timezone

from common import signing
from loops import engine
from loops.agents import AgentError, adapter_for
from loops.declare import (
    AGENTS,
    DeclarationError,
    Escalation,
    Spawn,
    Task,
    remote_agent,
)
from loops.models import Agent, Bid, Contribution, Event, LoopRun
from oversight.models import Halt, Interrupt
from oversight.services import halts
from tests.conftest import wait_for
from tests.loops import decl_remote
from tests.loops.loopback import (
    SECRET,
    LoopbackServer,
    Received,
    Reply,
    completion,
    http_agent,
    llm_agent,
    run_to_end,
    step_to_end,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State
TASK = Task(run_id=1, iteration=1, phase="ask", task_type="wire.ask", payload={}, context={})


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.close()


@pytest.fixture
def other_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.close()


def bids_of(run: LoopRun) -> dict[str, Bid]:
    return {b.agent.name: b for b in Bid.objects.filter(iteration__run=run).select_related("agent")}


# --- Remote HTTP agents ---------------------------------------------------------------------


def test_it_bids_and_performs_through_the_engine(server):
    http_agent("remote", server.url)
    server.script("/bid", Reply(body={"confidence": 0.7, "est_cost": 0.02}))
    server.script(
        "/perform",
        Reply(body={"output": {"dose_mg": 350}, "cost": 0.015, "tokens": 9, "rationale": "7/kg"}),
    )

    run = run_to_end("wire-retry", weight_kg=50)

    assert (run.state, run.result) == (State.SUCCEEDED, {"dose_mg": 350})
    bid = bids_of(run)["remote"]
    assert (bid.decision, bid.confidence, bid.est_cost, bid.selected) == ("bid", 0.7, 0.02, True)
    contribution = Contribution.objects.get(iteration__run=run)
    assert (contribution.cost, contribution.tokens) == (0.015, 9)
    assert (run.cost, run.tokens) == (pytest.approx(0.015), 9)
    asked = server.asked("/perform")[0].json
    assert asked["task_type"] == "wire.ask"
    assert asked["context"]["input"] == {"weight_kg": 50}
    assert (asked["run"], asked["iteration"], asked["agent"]) == (run.pk, 1, "remote")


def _verifying(secret: str):
    """A receiver that checks the signature the way the webhook docs tell agents to."""

    def reply(request: Received) -> Reply:
        timestamp = request.headers["x-console-timestamp"]
        signed = timestamp.encode() + b"." + request.body
        expected = "v1=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        fresh = abs(time.time() - int(timestamp)) < 30
        if not (fresh and hmac.compare_digest(request.headers["x-console-signature"], expected)):
            return Reply(401, {"error": "bad_signature"})
        if request.path == "/bid":
            return Reply(body={"confidence": 0.9})
        return Reply(body={"output": "verified"})

    return reply


def test_it_signs_every_request_with_the_shared_secret(server, monkeypatch):
    monkeypatch.setenv("WIRE_TEST_SECRET", "from-the-environment")
    agent = http_agent("signed", server.url)
    agent.config = {"url": server.url, "secret_env": "WIRE_TEST_SECRET"}
    agent.save()
    server.script("/bid", _verifying("from-the-environment"))
    server.script("/perform", _verifying("from-the-environment"))

    run = run_to_end("wire-retry")

    assert (run.state, run.result) == (State.SUCCEEDED, "verified")
    assert [r.path for r in server.received] == ["/bid", "/perform"]


def test_it_is_refused_by_an_agent_that_holds_another_secret(server):
    http_agent("wrong-secret", server.url)  # signs with SECRET
    server.script("/bid", _verifying("the-agents-own-secret"))

    run = run_to_end("wire-retry")

    bid = bids_of(run)["wrong-secret"]
    assert bid.decision == "decline"
    assert bid.reason.startswith("bid failed (client_error)")
    assert "HTTP 401" in bid.reason
    assert not server.asked("/perform")


def test_it_never_calls_without_its_secret(server):
    agent = http_agent("secretless", server.url)
    agent.config = {"url": server.url, "secret_env": "WIRE_UNSET_SECRET"}
    agent.save()

    run = run_to_end("wire-retry")

    assert "WIRE_UNSET_SECRET" in bids_of(run)["secretless"].reason
    assert server.received == []


def test_it_verifies_signatures_on_recent_timestamps_only():
    body = b'{"a": 1}'
    headers = signing.signed_headers("s3cret", body)
    timestamp, signature = headers["X-Console-Timestamp"], headers["X-Console-Signature"]

    assert signing.verify("s3cret", timestamp, body, signature)
    assert not signing.verify("other", timestamp, body, signature)
    assert not signing.verify("s3cret", timestamp, body + b" ", signature)
    old = signing.signed_headers("s3cret", body, now=time.time() - 3600)
    old_timestamp, old_signature = old["X-Console-Timestamp"], old["X-Console-Signature"]
    assert not signing.verify("s3cret", old_timestamp, body, old_signature)


def test_it_counts_a_bid_that_does_not_come_in_time_as_a_decline(server):
    http_agent("slow-bidder", server.url, bid_timeout_s=0.2)
    server.script("/bid", Reply(body={"confidence": 0.9}, delay=2.0))

    started = time.monotonic()
    run = run_to_end("wire-retry")

    assert time.monotonic() - started < 1.5  # the step did not wait for the answer
    bid = bids_of(run)["slow-bidder"]
    assert (bid.decision, bid.selected) == ("decline", False)
    assert bid.reason.startswith("no answer")
    assert "0.2 s" in bid.reason
    assert not server.asked("/perform")


def test_it_asks_for_bids_no_longer_than_the_bid_window(server):
    http_agent("patient-bidder", server.url, bid_timeout_s=5)
    server.script("/bid", Reply(body={"confidence": 0.9}, delay=2.0))

    started = time.monotonic()
    run = run_to_end("wire-quick-bids")  # a 300 ms bid window

    assert time.monotonic() - started < 1.5
    assert bids_of(run)["patient-bidder"].reason.startswith("no answer")


def test_it_asks_remote_agents_for_their_bids_at_once(server, other_server):
    http_agent("first", server.url)
    http_agent("second", other_server.url)
    for s in (server, other_server):
        s.script("/bid", Reply(body={"confidence": 0.6}, delay=0.6))

    started = time.monotonic()
    run = run_to_end("wire-retry")

    assert time.monotonic() - started < 1.1  # not 0.6 s, then 0.6 s more
    assert {name: b.decision for name, b in bids_of(run).items()} == {
        "first": "bid",
        "second": "bid",
    }


def test_it_records_a_remote_decline_with_its_reason(server):
    http_agent("choosy", server.url)
    server.script("/bid", Reply(body={"decline": "outside my formulary"}))

    run = run_to_end("wire-retry")

    assert bids_of(run)["choosy"].reason == "outside my formulary"
    assert not server.asked("/perform")


def test_it_broadcasts_nothing_to_a_remote_agent_with_a_stale_heartbeat(server, other_server):
    http_agent("alive", server.url)
    stale = http_agent("stale", other_server.url)
    Agent.objects.filter(pk=stale.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=10))

    run = run_to_end("wire-retry")

    assert set(bids_of(run)) == {"alive"}
    assert other_server.received == []  # not even asked for a bid (CONCEPTS 33)
    assert run.state == State.SUCCEEDED


MALFORMED = [
    ("{not json", "not JSON"),
    ({"result": 1}, "no output"),
    ({"output": 1, "tokens": -3}, "tokens"),
    ({"output": 1, "cost": "free"}, "not a number"),
    ({"output": 1, "escalate": {"reason": "x", "severity": "panic"}}, "severity"),
    ({"output": 1, "escalate": {"severity": "info"}}, "reason"),
]


@pytest.mark.parametrize("body, why", MALFORMED)
def test_it_calls_a_malformed_answer_invalid_output(server, body, why):
    server.script("/perform", Reply(body=body))
    adapter = adapter_for(http_agent("sloppy", server.url))
    assert adapter is not None

    with pytest.raises(AgentError) as raised:
        adapter.perform(TASK)

    assert (raised.value.error_class, raised.value.retryable) == ("invalid_output", False)
    assert why in raised.value.message


def test_it_reads_escalation_metrics_and_spawns_from_the_answer(server):
    server.script(
        "/perform",
        Reply(
            body={
                "output": {"dose_mg": 1200},
                "escalate": {"reason": "over the maximum dose", "severity": "critical"},
                "metrics": {"dose_ratio": 1.5},
                "spawn": [{"blueprint": "wire-retry", "input": {"x": 1}}],
            }
        ),
    )
    adapter = adapter_for(http_agent("careful", server.url))
    assert adapter is not None

    outcome = adapter.perform(TASK)

    assert outcome.escalate == Escalation(reason="over the maximum dose", severity="critical")
    assert outcome.metrics == {"dose_ratio": 1.5}
    assert outcome.spawn == (Spawn("wire-retry", {"x": 1}),)


def test_it_interrupts_the_run_when_a_remote_agent_escalates(server):
    http_agent("careful", server.url)
    escalate = {"reason": "a severe interaction", "severity": "critical"}
    answer = {"output": {"pair": "warfarin+aspirin"}, "escalate": escalate}
    server.script("/perform", Reply(body=answer))

    run = run_to_end("wire-retry")

    assert run.state == State.INTERRUPTED
    interrupt = Interrupt.objects.get(run=run)
    assert (interrupt.reason, interrupt.severity) == ("a severe interaction", "critical")


# --- H1: a halt stops remote calls ---------------------------------------------------------


def test_it_makes_no_remote_call_after_a_halt_commits_between_the_claim_and_the_call(server):
    # The services check no role (the views and the API do): any user will do here, and a
    # transactional test elsewhere in the session may have flushed the role groups.
    admin = get_user_model().objects.create_user("wire-admin")
    remote = http_agent("remote", server.url, capability="halting")

    def halt_meanwhile(task: Task) -> None:
        # Runs inside the step, after the calls were claimed and before the remote one.
        halts.halt_engage(actor=admin, scope=f"run:{task.run_id}", reason="stop remote calls")

    decl_remote.WHILE_PERFORMING.append(halt_meanwhile)
    try:
        run = run_to_end("wire-halt")
    finally:
        decl_remote.WHILE_PERFORMING.clear()

    assert run.state == State.HALTED
    assert len(server.asked("/bid")) == 1
    assert server.asked("/perform") == []  # H1: no agent call starts after the halt
    call = Contribution.objects.get(iteration__run=run, agent=remote)
    assert (call.status, call.attempts) == ("running", [])  # not made, so not recorded
    made = Contribution.objects.get(iteration__run=run, agent__name="halter")
    assert (made.status, made.held) == ("completed", True)

    halt = Halt.objects.get(run=run)
    halts.halt_lift(halt_id=halt.pk, actor=admin, reason="checked")
    run = step_to_end(run)

    assert len(server.asked("/perform")) == 1  # resumed exactly where it stood
    assert run.state == State.SUCCEEDED


@pytest.mark.django_db(transaction=True)
def test_it_stops_retrying_once_a_halt_commits_during_a_call_and_resumes_after_it(server):
    admin = get_user_model().objects.create_user("wire-admin")
    http_agent("remote", server.url)

    def halt_then_fail(request: Received) -> Reply:
        # Another operator halts the run while the agent works (its own connection, committed).
        try:
            halts.halt_engage(actor=admin, scope=f"run:{request.json['run']}", reason="meanwhile")
        finally:
            connection.close()
        return Reply(503, {"error": "overloaded"})

    server.script("/perform", halt_then_fail, Reply(body={"output": "after the lift"}))

    run = run_to_end("wire-retry")

    # The step may be a session worker's: wait for the halt and for the attempt it cut short.
    run = wait_for(lambda: LoopRun.objects.filter(pk=run.pk, state=State.HALTED).first())
    call = wait_for(
        lambda: Contribution.objects.filter(iteration__run=run).exclude(attempts=[]).first()
    )
    assert call.status == "running"
    assert [a["error_class"] for a in call.attempts] == ["server_error"]  # kept, not lost
    assert len(server.asked("/perform")) == 1  # no retry under the halt

    halts.halt_lift(halt_id=Halt.objects.get(run=run).pk, actor=admin, reason="checked")

    def finished() -> bool:
        # A session-wide worker may take the step instead of us; either is fine.
        engine.advance(run_id=run.pk)
        run.refresh_from_db()
        return run.state == State.SUCCEEDED

    wait_for(finished)
    call.refresh_from_db()
    assert [a["n"] for a in call.attempts] == [1, 2]  # numbered on after the lift
    retried = server.asked("/perform")[1].json["retry_context"]
    assert (retried["attempt"], retried["error_class"]) == (1, "server_error")


# --- LLM agents on an OpenAI-compatible server ------------------------------------------------


def test_it_runs_an_llm_agent_against_an_openai_compatible_server(server, monkeypatch):
    monkeypatch.setenv("WIRE_LLM_KEY", "sk-loopback")
    llm_agent(
        "summariser",
        f"{server.url}/v1",
        api_key_env="WIRE_LLM_KEY",
        confidence=0.75,
        cost_per_1k_tokens=2.0,
    )
    server.script(
        "/v1/chat/completions", Reply(body=completion('{"summary": "all well"}', tokens=42))
    )

    run = run_to_end("wire-llm", notes="patient stable")

    assert (run.state, run.result) == (State.SUCCEEDED, {"summary": "all well"})
    assert bids_of(run)["summariser"].confidence == 0.75  # the bid made no call
    contribution = Contribution.objects.get(iteration__run=run)
    assert contribution.tokens == 42
    assert contribution.cost == pytest.approx(42 / 1000 * 2.0)
    assert (run.tokens, run.cost) == (42, pytest.approx(0.084))
    responded = Event.objects.filter(run=run, type="agent.call.responded")
    assert sum(e.payload["tokens"] for e in responded) == run.tokens  # CONCEPTS 70
    (request,) = server.received
    assert request.headers["authorization"] == "Bearer sk-loopback"
    sent = request.json
    assert (sent["model"], sent["temperature"]) == ("tiny-test", 0)
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    assert "wire.ask" in sent["messages"][1]["content"]
    assert "patient stable" in sent["messages"][1]["content"]


def test_it_keeps_an_llm_answer_that_is_not_json_as_text(server):
    llm_agent("poet", f"{server.url}/v1")
    server.script("/v1/chat/completions", Reply(body=completion("Roses are red.", tokens=7)))

    run = run_to_end("wire-llm")

    assert (run.result, run.tokens) == ("Roses are red.", 7)


def test_it_reads_json_an_llm_wrapped_in_a_code_fence(server):
    llm_agent("fenced", f"{server.url}/v1")
    server.script(
        "/v1/chat/completions", Reply(body=completion('```json\n{"value": 3}\n```', tokens=5))
    )

    assert run_to_end("wire-llm").result == {"value": 3}


def test_it_retries_an_llm_server_error(server):
    llm_agent("busy-model", f"{server.url}/v1")
    server.script(
        "/v1/chat/completions",
        Reply(500, {"error": {"message": "CUDA out of memory"}}),
        Reply(body=completion('"fine"')),
    )

    run = run_to_end("wire-llm")

    attempts = Contribution.objects.get(iteration__run=run).attempts
    assert [a["error_class"] for a in attempts] == ["server_error", ""]
    assert run.state == State.SUCCEEDED


def test_it_does_not_retry_an_llm_call_the_server_refused_as_unauthorized(server):
    llm_agent("locked-model", f"{server.url}/v1")
    server.script("/v1/chat/completions", Reply(401, {"error": {"message": "invalid api key"}}))

    run = run_to_end("wire-llm")

    attempts = Contribution.objects.get(iteration__run=run).attempts
    assert [a["error_class"] for a in attempts] == ["client_error"]
    assert len(server.received) == 1
    assert run.state != State.SUCCEEDED


def test_it_reports_a_content_filter_refusal_as_a_policy_error(server):
    llm_agent("filtered", f"{server.url}/v1")
    answer = completion("")
    answer["choices"][0]["finish_reason"] = "content_filter"
    server.script("/v1/chat/completions", Reply(body=answer))

    run = run_to_end("wire-llm")

    attempts = Contribution.objects.get(iteration__run=run).attempts
    assert [a["error_class"] for a in attempts] == ["policy"]


# --- Declarations -------------------------------------------------------------------------


def test_it_mirrors_declared_remote_agents_with_their_adapter_and_config():
    http = Agent.objects.get(domain__slug="wire", name="declared-http")
    llm = Agent.objects.get(domain__slug="wire", name="declared-llm")

    assert (http.adapter, http.config["secret_env"]) == ("http", "WIRE_DECLARED_SECRET")
    assert "secret" not in http.config  # the secret itself lives in the environment
    assert (llm.adapter, llm.config["model"], llm.task_types) == ("llm", "tiny", ["wire.summarise"])
    assert Agent.objects.get(domain__slug="wire", name="halter").config == {
        "implementation": "wire.halter"
    }


@pytest.mark.parametrize(
    "adapter, config, problem",
    [
        ("http", {"secret": "x"}, "needs url"),
        ("http", {"url": "http://127.0.0.1:9"}, "needs secret or secret_env"),
        ("llm", {"base_url": "http://127.0.0.1:9/v1"}, "needs model"),
        ("grpc", {"url": "http://127.0.0.1:9"}, "adapter must be http, llm, realm or a2a"),
    ],
)
def test_it_rejects_a_remote_agent_it_could_not_call(adapter, config, problem):
    with pytest.raises(DeclarationError, match=problem):
        remote_agent("wire", "incomplete", adapter=adapter, config=config)
    assert ("wire", "incomplete") not in AGENTS


def test_it_cannot_call_a_remote_agent_without_an_address():
    agent = Agent(name="nowhere", adapter=Agent.Adapter.HTTP, config={"secret": SECRET})
    assert adapter_for(agent) is None
    assert adapter_for(Agent(name="x", adapter=Agent.Adapter.LLM, config={"model": "m"})) is None
