"""ReAct LLM agents (CONCEPTS 61): reason, act with a tool, observe, until finish or
max_steps. A real OpenAI-compatible server on loopback (tests/loops/loopback.py) answers a
scripted sequence of model replies; the tools are declared in tests/loops/decl_remote.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from loops.agents import adapter_for
from loops.declare import AGENTS, DeclarationError, remote_agent
from loops.models import Agent, Contribution, Event, LoopRun
from oversight.models import Halt
from oversight.services import halts
from tests.loops import decl_remote
from tests.loops.loopback import (
    LoopbackServer,
    Reply,
    completion,
    llm_agent,
    run_to_end,
    step_to_end,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State
CHAT = "/v1/chat/completions"


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.close()


def react_agent(server: LoopbackServer, name: str = "reasoner", **config: Any) -> Agent:
    config = {"mode": "react", "tools": ["wire.lookup", "wire.explode"], **config}
    return llm_agent(name, f"{server.url}/v1", capability="react", **config)


def says(tokens: int = 10, **step: Any) -> Reply:
    """The model's answer to one step: a JSON object of thought, action and input/output."""
    return Reply(body=completion(json.dumps(step), tokens=tokens))


def lookup(drug: str, tokens: int = 10) -> Reply:
    return says(tokens, thought=f"I need {drug}'s dose", action="wire.lookup", input={"drug": drug})


def finish(output: Any, tokens: int = 10) -> Reply:
    return says(tokens, thought="I know enough", action="finish", output=output)


def steps_of(run: LoopRun) -> list[Event]:
    return list(Event.objects.filter(run=run, type__startswith="react.").order_by("seq"))


def sent(server: LoopbackServer, n: int) -> list[dict[str, str]]:
    """The messages of the server's n-th request (from 0)."""
    return server.asked(CHAT)[n].json["messages"]


def test_it_alternates_thoughts_actions_and_observations_until_finish(server):
    agent = react_agent(server)
    answer = {"warfarin": "2-10 mg", "aspirin": "75-100 mg"}
    server.script(CHAT, lookup("warfarin"), lookup("aspirin"), finish(answer))

    run = run_to_end("wire-react")

    assert (run.state, run.result) == (State.SUCCEEDED, answer)
    steps = steps_of(run)
    assert [e.type for e in steps] == [
        *["react.thought", "react.action", "react.observation"] * 2,
        "react.thought",
        "react.action",
    ]
    assert [e.payload["step"] for e in steps] == [1, 1, 1, 2, 2, 2, 3, 3]
    assert [e.payload["tool"] for e in steps if e.type == "react.action"] == [
        "wire.lookup",
        "wire.lookup",
        "finish",
    ]
    assert steps[0].payload["content"] == "I need warfarin's dose"
    assert json.loads(steps[-1].payload["content"]) == answer
    assert {(e.payload["layer"], e.payload["agent"], e.payload["attempt"]) for e in steps} == {
        ("react", agent.pk, 1)
    }
    # Written with the call's result: inside the call, just before its answer.
    responded = Event.objects.get(run=run, type="agent.call.responded")
    assert steps[-1].seq == responded.seq - 1
    assert len(server.asked(CHAT)) == 3


def test_it_stops_after_max_steps_without_a_finish(server):
    react_agent(server, max_steps=3, cost_per_1k_tokens=1.0)
    server.script(CHAT, lookup("warfarin", tokens=20))  # every step, for ever

    run = run_to_end("wire-react")

    assert len(server.asked(CHAT)) == 3  # the cap, and no retry of the whole loop
    call = Contribution.objects.get(iteration__run=run)
    assert (call.status, call.error_class) == ("failed", "invalid_output")
    assert "no finish within 3 steps" in call.error
    assert len(call.attempts) == 1
    assert run.state == State.EXHAUSTED  # no answer in its one iteration
    steps = steps_of(run)
    assert [e.type for e in steps] == ["react.thought", "react.action", "react.observation"] * 3
    assert [e.payload["step"] for e in steps[::3]] == [1, 2, 3]
    # The steps were paid for, finished or not.
    assert (call.tokens, call.cost) == (60, pytest.approx(0.06))
    assert (run.tokens, run.cost) == (60, pytest.approx(0.06))
    assert Event.objects.get(run=run, type="agent.call.errored").payload["tokens"] == 60


def test_it_feeds_a_tools_observation_into_the_next_request(server):
    react_agent(server, max_steps=4)
    server.script(CHAT, lookup("warfarin"), finish("2-10 mg a day"))

    run = run_to_end("wire-react", patient="p-7")

    first, second = sent(server, 0), sent(server, 1)
    assert [m["role"] for m in first] == ["system", "user"]
    assert "at most 4" in first[0]["content"]
    assert "- wire.lookup: Look a drug up in the formulary" in first[0]["content"]
    assert "p-7" in first[1]["content"]
    assert second[:2] == first
    assert [m["role"] for m in second[2:]] == ["assistant", "user"]
    assert json.loads(second[2]["content"])["input"] == {"drug": "warfarin"}
    observed = {"drug": "warfarin", "dose": "2-10 mg a day"}
    assert second[3]["content"] == "Observation: " + json.dumps(observed)
    (observation,) = [e for e in steps_of(run) if e.type == "react.observation"]
    assert json.loads(observation.payload["content"]) == observed
    assert run.result == "2-10 mg a day"


@pytest.mark.parametrize(
    "tool",
    [
        "wire.teleport",  # declared nowhere
        "wire.hook",  # declared, but not among this agent's tools
    ],
)
def test_it_feeds_an_unknown_tools_error_back_as_an_observation(server, tool):
    react_agent(server)
    server.script(CHAT, says(thought="try this", action=tool, input={}), finish("recovered"))

    run = run_to_end("wire-react")

    observation = sent(server, 1)[-1]["content"]
    assert observation.startswith(f"Observation: error: unknown tool {tool!r}")
    assert "wire.lookup, wire.explode" in observation  # what it may use instead
    assert steps_of(run)[2].payload["content"] == observation.removeprefix("Observation: ")
    assert (run.state, run.result) == (State.SUCCEEDED, "recovered")


def test_it_feeds_a_tools_failure_back_as_an_observation(server):
    react_agent(server)
    server.script(
        CHAT, says(thought="ask the service", action="wire.explode", input={}), finish("later")
    )

    run = run_to_end("wire-react")

    assert sent(server, 1)[-1]["content"] == (
        "Observation: error: wire.explode failed: RuntimeError: the formulary service is down"
    )
    assert (run.state, run.result) == (State.SUCCEEDED, "later")


@pytest.mark.parametrize(
    "reply",
    [
        "I think the dose is 5 mg.",  # not JSON
        json.dumps({"thought": "no action"}),
        json.dumps({"thought": "done", "action": "finish"}),  # a finish without output
    ],
)
def test_it_feeds_back_an_answer_that_is_not_a_step(server, reply):
    react_agent(server)
    server.script(CHAT, Reply(body=completion(reply, tokens=5)), finish(5))

    run = run_to_end("wire-react")

    assert sent(server, 1)[-2]["content"] == reply
    assert sent(server, 1)[-1]["content"].startswith("Observation: error: answer with one JSON")
    assert [e.type for e in steps_of(run)][:3] == [
        "react.thought",
        "react.action",
        "react.observation",
    ]
    assert run.result == 5


def test_it_adds_up_the_tokens_of_every_step(server):
    react_agent(server, cost_per_1k_tokens=2.0)
    server.script(
        CHAT, lookup("warfarin", tokens=11), lookup("aspirin", tokens=13), finish("ok", tokens=17)
    )

    run = run_to_end("wire-react")

    call = Contribution.objects.get(iteration__run=run)
    assert (call.tokens, call.cost) == (41, pytest.approx(41 / 1000 * 2.0))
    assert (run.tokens, run.cost) == (41, pytest.approx(0.082))
    responded = Event.objects.get(run=run, type="agent.call.responded")
    assert responded.payload["tokens"] == run.tokens  # CONCEPTS 70


def test_it_counts_the_steps_of_an_attempt_that_failed_midway(server):
    react_agent(server)
    server.script(
        CHAT,
        lookup("warfarin", tokens=7),
        Reply(500, {"error": {"message": "CUDA out of memory"}}),
        lookup("warfarin", tokens=11),
        finish("ok", tokens=13),
    )

    run = run_to_end("wire-react")

    call = Contribution.objects.get(iteration__run=run)
    assert [a["error_class"] for a in call.attempts] == ["server_error", ""]
    assert (call.tokens, run.tokens, run.result) == (31, 31, "ok")
    # The retry starts the loop again, from step 1, told why.
    assert "attempt 1 failed (server_error)" in sent(server, 2)[1]["content"]
    assert len(sent(server, 2)) == 2
    assert [(e.payload["attempt"], e.payload["step"], e.type) for e in steps_of(run)] == [
        (1, 1, "react.thought"),
        (1, 1, "react.action"),
        (1, 1, "react.observation"),
        (2, 1, "react.thought"),
        (2, 1, "react.action"),
        (2, 1, "react.observation"),
        (2, 2, "react.thought"),
        (2, 2, "react.action"),
    ]


def test_it_makes_no_further_step_after_a_halt_commits_between_steps(server):
    # The services check no role (the views and the API do): any user will do here.
    admin = get_user_model().objects.create_user("react-admin")
    react_agent(server, tools=["wire.hook"])
    server.script(
        CHAT,
        says(thought="work", action="wire.hook", input={}),
        says(thought="work again", action="wire.hook", input={}),
        finish("after the lift"),
    )

    def halt_meanwhile(task):
        halts.halt_engage(actor=admin, scope=f"run:{task.run_id}", reason="stop the model")

    decl_remote.WHILE_PERFORMING.append(halt_meanwhile)
    try:
        run = run_to_end("wire-react")
    finally:
        decl_remote.WHILE_PERFORMING.clear()

    assert run.state == State.HALTED
    assert len(server.asked(CHAT)) == 1  # H1: step 2 did not start
    call = Contribution.objects.get(iteration__run=run)
    assert (call.status, call.attempts) == ("running", [])

    halts.halt_lift(halt_id=Halt.objects.get(run=run).pk, actor=admin, reason="checked")
    run = step_to_end(run)

    assert (run.state, run.result) == (State.SUCCEEDED, "after the lift")
    assert len(server.asked(CHAT)) == 3


def test_it_holds_the_lease_over_every_step():
    agent = Agent(
        name="x",
        adapter=Agent.Adapter.LLM,
        config={
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            "timeout_s": 20,
            "mode": "react",
            "max_steps": 4,
        },
    )
    adapter = adapter_for(agent)

    assert adapter is not None
    assert adapter.timeout_s == 80


@pytest.mark.parametrize(
    "config, problem",
    [
        ({"mode": "reflect"}, "mode must be chat or react"),
        ({"mode": "react", "max_steps": 0}, "max_steps ≥ 1"),
        ({"mode": "react", "max_steps": "5"}, "max_steps ≥ 1"),
    ],
)
def test_it_rejects_a_react_agent_it_could_not_run(config, problem):
    config = {"base_url": "http://127.0.0.1:9/v1", "model": "m", **config}
    with pytest.raises(DeclarationError, match=problem):
        remote_agent("wire", "unrunnable", adapter="llm", config=config)
    assert ("wire", "unrunnable") not in AGENTS
