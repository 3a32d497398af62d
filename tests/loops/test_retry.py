"""The retry layer (Loopcraft L1, CONCEPTS 55 to 59): attempts, backoff, jitter, error
classes and the context handed to the next attempt, against real HTTP agents on loopback
(tests/loops/loopback.py) and the engine stepped in this process."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.utils import timezone

from loops import services
from loops.declare import BLUEPRINTS, Retry, Task
from loops.engine import calls
from loops.engine.lease import StepAborted, worker
from loops.models import Contribution, LoopRun
from tests.loops.loopback import (
    LoopbackServer,
    Reply,
    attempt_times,
    completion,
    http_agent,
    llm_agent,
    refused_url,
    run_to_end,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.close()


def contribution_of(run: LoopRun) -> Contribution:
    return Contribution.objects.get(iteration__run=run)


def classes(contribution: Contribution) -> list[str]:
    return [a["error_class"] for a in contribution.attempts]


def countdowns(contribution: Contribution) -> list[float | None]:
    return [a["countdown_ms"] for a in contribution.attempts]


# --- CONCEPTS 55: attempts -------------------------------------------------------------


def test_it_retries_a_transient_failure_until_it_succeeds(server):
    http_agent("flaky", server.url)
    server.script("/perform", Reply(503), Reply(503), Reply(body={"output": {"answer": 42}}))

    run = run_to_end("wire-retry")

    contribution = contribution_of(run)
    assert classes(contribution) == ["server_error", "server_error", ""]
    assert [a["n"] for a in contribution.attempts] == [1, 2, 3]
    assert contribution.status == Contribution.Status.COMPLETED
    assert len(server.asked("/perform")) == 3
    assert (run.state, run.result) == (LoopRun.State.SUCCEEDED, {"answer": 42})


def test_it_fails_the_call_after_max_attempts(server):
    http_agent("down", server.url)
    server.script("/perform", Reply(503, {"error": "overloaded"}))

    run = run_to_end("wire-retry")

    contribution = contribution_of(run)
    assert classes(contribution) == ["server_error"] * 3  # max_attempts=3
    assert countdowns(contribution)[-1] is None  # no wait after the last attempt
    assert (contribution.status, contribution.error_class) == ("failed", "server_error")
    assert "HTTP 503" in contribution.error
    assert run.state != LoopRun.State.SUCCEEDED


def test_it_retries_an_in_process_agent_that_says_its_error_is_retryable():
    run = run_to_end("wire-shaky")

    contribution = contribution_of(run)
    assert classes(contribution) == ["error", "error", ""]
    assert contribution.output == {"attempts_seen": 2}  # it saw retry_context (CONCEPTS 59)
    assert run.state == LoopRun.State.SUCCEEDED


def test_it_makes_one_attempt_for_an_in_process_agent_error_that_is_not_retryable():
    run = run_to_end("wire-broken")

    contribution = contribution_of(run)
    assert classes(contribution) == ["error"]
    assert contribution.error == "ValueError: a bug, not a hiccup"


# --- CONCEPTS 56 and 57: backoff and jitter ---------------------------------------------


def test_it_backs_off_exponentially_up_to_the_cap_without_jitter(server):
    http_agent("down", server.url, capability="backoff")
    server.script("/perform", Reply(500))

    run = run_to_end("wire-backoff")  # base 20 ms, cap 50 ms, 5 attempts

    contribution = contribution_of(run)
    assert countdowns(contribution) == [20.0, 40.0, 50.0, 50.0, None]
    times = attempt_times(contribution.attempts)
    gaps = [(b - a).total_seconds() * 1000 for a, b in itertools.pairwise(times)]
    assert all(gap >= wait for gap, wait in zip(gaps, [20, 40, 50, 50], strict=True))


def test_it_draws_full_jitter_from_a_seeded_rng(server):
    http_agent("down", server.url, capability="backoff")
    server.script("/perform", Reply(500))
    calls.RNG.seed(1234)

    run = run_to_end("wire-jitter")

    ceilings = [20, 40, 50, 50]
    expected_rng = random.Random(1234)  # noqa: S311
    expected = [round(expected_rng.uniform(0, c / 1000) * 1000, 3) for c in ceilings]
    got = countdowns(contribution_of(run))
    assert got[:4] == pytest.approx(expected)
    assert all(0 <= wait <= ceiling for wait, ceiling in zip(got, ceilings, strict=False))
    assert got[:4] != [float(c) for c in ceilings]  # drawn, not the ceilings themselves


@pytest.mark.parametrize("n, ceiling_ms", [(1, 100), (2, 200), (3, 400), (4, 800), (9, 1000)])
def test_it_keeps_each_jittered_delay_under_its_ceiling(n, ceiling_ms):
    retry = Retry(max_attempts=10, base_ms=100, cap_ms=1000, jitter=True)
    error = calls.AgentError("busy", error_class="server_error")
    rng = random.Random(n)  # noqa: S311

    waits = [calls.backoff(retry, n, error, rng) for _ in range(200)]

    assert all(0 <= w <= ceiling_ms / 1000 for w in waits)
    assert max(waits) > ceiling_ms / 1000 * 0.9  # the whole range is drawn from


# --- CONCEPTS 58: error classification (table-driven) --------------------------------------

NOT_RETRIED = [
    (Reply(400, {"error": "bad_request"}), "request_validation"),
    (Reply(401, {"error": "unauthorized"}), "client_error"),
    (Reply(403, {"error": "forbidden"}), "client_error"),
    (Reply(404, {"error": "not_found"}), "client_error"),
    (Reply(422, {"error": "invalid", "detail": "payload.dose is missing"}), "request_validation"),
    (Reply(403, {"error": "policy", "detail": "not for minors"}), "policy"),
    (Reply(200, "{not json"), "invalid_output"),
    (Reply(200, {"result": "no output key"}), "invalid_output"),
]


@pytest.mark.parametrize("reply, error_class", NOT_RETRIED)
def test_it_makes_exactly_one_attempt_for_an_error_not_worth_repeating(server, reply, error_class):
    http_agent("refusing", server.url)
    server.script("/perform", reply)

    run = run_to_end("wire-retry")

    contribution = contribution_of(run)
    assert classes(contribution) == [error_class]
    assert len(server.asked("/perform")) == 1
    assert contribution.status == Contribution.Status.FAILED


RETRIED = [
    (Reply(500), "server_error"),
    (Reply(502), "server_error"),
    (Reply(503), "server_error"),
    (Reply(429, {"error": "slow down"}), "rate_limited"),
    (Reply(200, {"output": "too late"}, delay=1.0), "timeout"),  # the agent's timeout is 0.2 s
]


@pytest.mark.parametrize("reply, error_class", RETRIED)
def test_it_retries_an_error_that_may_pass(server, reply, error_class):
    http_agent("struggling", server.url, timeout_s=0.2)
    server.script("/perform", reply)

    run = run_to_end("wire-retry")

    assert classes(contribution_of(run)) == [error_class] * 3
    assert len(server.asked("/perform")) == 3


def test_it_retries_a_refused_connection():
    gone = http_agent("gone", refused_url())

    # Broadcast: the refused bid is a decline with its reason, and nobody is selected.
    run = run_to_end("wire-retry")
    assert run.iterations.get().bids.get().reason.startswith("bid failed (connection)")

    # The call itself, as the engine makes it for a selected agent.
    run = services.run_start(domain="wire", blueprint="wire-retry", input={})
    LoopRun.objects.filter(pk=run.pk).update(lease_worker=worker())
    task = Task(run.pk, 1, "ask", "wire.ask", {}, {})
    result = calls.perform(BLUEPRINTS["wire-retry"], Contribution(agent=gone), task)

    assert [a["error_class"] for a in result.attempts] == ["connection"] * 3
    assert result.outcome is None


def test_it_waits_at_least_as_long_as_retry_after_says(server):
    http_agent("busy", server.url)
    server.script(
        "/perform",
        Reply(429, {"error": "rate_limited"}, headers={"Retry-After": "1"}),
        Reply(body={"output": "done"}),
    )

    run = run_to_end("wire-retry")

    contribution = contribution_of(run)
    assert classes(contribution) == ["rate_limited", ""]
    first, second = attempt_times(contribution.attempts)
    assert second - first >= timedelta(seconds=1)
    assert contribution.attempts[0]["countdown_ms"] >= 1000
    asked = server.asked("/perform")
    assert asked[1].at - asked[0].at >= 1.0  # as the server saw it, too


def test_it_gives_up_when_retry_after_is_beyond_the_cap(server):
    http_agent("very-busy", server.url)
    server.script("/perform", Reply(429, headers={"Retry-After": "120"}), Reply(body={"output": 1}))

    run = run_to_end("wire-retry")  # cap 1.5 s

    contribution = contribution_of(run)
    assert classes(contribution) == ["rate_limited"]  # asking sooner would be refused again
    assert countdowns(contribution) == [None]


# --- CONCEPTS 59: context adjustment -------------------------------------------------------


def test_it_hands_the_previous_error_to_the_next_attempt(server):
    http_agent("forgetful", server.url)
    server.script(
        "/perform", Reply(500, {"error": "database is down"}), Reply(body={"output": "ok"})
    )

    run_to_end("wire-retry")

    first, second = (r.json for r in server.asked("/perform"))
    assert first["retry_context"] is None
    context = second["retry_context"]
    assert (context["attempt"], context["error_class"]) == (1, "server_error")
    assert "database is down" in context["message"]


def test_it_shrinks_the_llm_prompt_after_a_context_length_error(server):
    llm_agent("summariser", f"{server.url}/v1")
    too_long = {
        "object": "error",
        "message": "This model's maximum context length is 2048 tokens. However, you "
        "requested 4100 tokens in the messages. Please reduce the length of the messages.",
        "type": "BadRequestError",
        "code": 400,
    }
    server.script("/v1/chat/completions", Reply(400, too_long), Reply(body=completion('"short"')))

    run = run_to_end("wire-llm", notes="lorem ipsum " * 400)

    contribution = contribution_of(run)
    assert classes(contribution) == ["context_length", ""]
    first, second = (r.json["messages"][1]["content"] for r in server.asked("/v1/chat/completions"))
    assert len(second) < len(first) - 1000
    assert "lorem ipsum" in second  # shorter, not emptied
    assert run.state == LoopRun.State.SUCCEEDED


# --- The lease over a remote call -----------------------------------------------------------


def test_it_extends_its_lease_over_a_remote_call_and_stops_when_it_lost_it():
    run = run_to_end("wire-broken")  # any run of the wire domain, ended
    LoopRun.objects.filter(pk=run.pk).update(state="running", lease_worker=worker())

    calls.hold(run.pk, 60)

    run.refresh_from_db()
    assert run.lease_expires_at > timezone.now() + timedelta(seconds=60)
    LoopRun.objects.filter(pk=run.pk).update(lease_worker="another-host:1:1")
    with pytest.raises(StepAborted):
        calls.hold(run.pk, 60)
