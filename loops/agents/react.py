"""ReAct (reason → act → observe, CONCEPTS 61): an LLM agent that works over several chat
completions and uses tools between them.

Config: the llm adapter's (loops.agents.llm), and {"mode": "react", "max_steps": 5,
"tools": ["lookup", …]}. Each step is one completion, and the model answers it with one JSON
object:

    {"thought": "…", "action": "lookup", "input": {…}}    use a tool
    {"thought": "…", "action": "finish", "output": …}      give the answer

A tool is a function declared with loops.declare.tool(name), fn(input, task) -> observation.
Each step adds the model's answer and a user message "Observation: …" to the conversation.
An unknown tool, a tool that raises, or an answer that is neither of the above becomes an
observation "error: …", and the model can correct itself on the next step.

If no finish comes within max_steps, the call fails with invalid_output and is not retried.
At temperature 0 the same conversation would come back. The last thought is not an answer,
and merging it as one would carry the agent's bid confidence into the result. The tokens of
every step count whether the loop finished or not. Every step is traced as react.thought,
react.action and react.observation events, written with the call's result and tagged layer
"react": a loop nested inside one attempt of the retry layer, before merge and validation.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from loops.agents.base import AgentError
from loops.agents.llm import LlmAdapter, content_of, parse_output, tokens_used
from loops.agents.llm import from_agent as llm_from_agent
from loops.declare import TOOLS
from loops.messages import Bid, Outcome, Task

if TYPE_CHECKING:
    from loops.models import Agent

FINISH = "finish"
PROTOCOL = (
    "Work in steps, at most {max_steps}. Answer each step with one JSON object and nothing "
    "else:\n"
    '{"thought": "…", "action": "<a tool>", "input": {…}} to use a tool, whose result comes '
    'back as "Observation: …";\n'
    '{"thought": "…", "action": "finish", "output": <your answer>} when you have the answer.\n'
    "Tools:\n{tools}"
)
NOT_A_STEP = (
    'error: answer with one JSON object, {"thought", "action", "input"} or '
    '{"thought", "action": "finish", "output"}'
)
OBSERVATION_CHARS = 4000  # of a tool's result, fed back to the model
TRACE_CHARS = 1000  # of a step's content, kept in its event


def _text(value: Any, limit: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + " …(cut)"


def _no_lease(seconds: float) -> None:
    """Outside the engine (a test calling perform() directly) there is no lease to keep."""


@dataclass
class Steps:
    """What one attempt's loop has done so far: the tokens it used and its trace."""

    attempt: int
    cost_per_1k_tokens: float
    tokens: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)

    @property
    def cost(self) -> float:
        return self.tokens / 1000 * self.cost_per_1k_tokens

    def record(self, kind: str, step: int, content: Any, **extra: Any) -> None:
        self.trace.append(
            {
                "type": f"react.{kind}",
                "step": step,
                "attempt": self.attempt,
                "content": _text(content, TRACE_CHARS),
                **extra,
                "layer": "react",
            }
        )


@dataclass(frozen=True)
class ReactAdapter:
    llm: LlmAdapter
    max_steps: int = 5
    tools: tuple[str, ...] = ()
    # The retry layer's check before a remote call, passed in by the engine: the run may
    # still go on (else StepAborted), and its lease now covers the seconds given.
    keep_lease: Callable[[float], None] = _no_lease
    remote: ClassVar[bool] = True
    bid_timeout_s: ClassVar[float] = 0.0  # bids make no call

    @property
    def timeout_s(self) -> float:
        # The retry layer holds the run's lease over one perform(): up to max_steps requests.
        return self.llm.timeout_s * self.max_steps

    def bid(self, task: Task, timeout_s: float | None = None) -> Bid:
        return self.llm.bid(task, timeout_s)

    def perform(self, task: Task, retry_context: dict[str, Any] | None = None) -> Outcome:
        """The loop, one completion per step:

        1. Before every step after the first, re-check the run's gate and extend its lease,
           as the retry layer does before every attempt: no call starts after a halt
           (DESIGN.md H1).
        2. Ask the model. A finish ends the loop with its output. A tool call runs the tool.
           Any other answer is an error observation.
        3. Add the answer and "Observation: …" to the conversation, and the thought, action
           and observation to the trace.
        4. If no finish comes within max_steps, fail with invalid_output. Every error carries
           the tokens and the trace of the steps made.
        """
        llm, context = self.llm, retry_context or {}
        what = f"agent {llm.name} {llm.model} (react)"
        share = float(context.get("context_share", 1.0))
        messages = llm.messages(task, retry_context, share)
        messages[0]["content"] += "\n\n" + self.protocol()
        steps = Steps(int(context.get("attempt", 0)) + 1, llm.cost_per_1k_tokens)
        try:
            for number in range(1, self.max_steps + 1):
                if number > 1:
                    self.keep_lease((self.max_steps - number + 1) * llm.timeout_s)
                answer = llm.complete(messages, share, what)
                steps.tokens += tokens_used(
                    answer.get("usage") if isinstance(answer, dict) else None
                )
                content = content_of(answer, what)
                done, said = self.step(parse_output(content), content, number, steps, task)
                if done:
                    return Outcome(
                        output=said,
                        cost=steps.cost,
                        tokens=steps.tokens,
                        rationale=f"{llm.model}: {number} steps, {steps.tokens} tokens",
                        trace=tuple(steps.trace),
                    )
                messages.append({"role": "assistant", "content": content})
                messages.append({"role": "user", "content": f"Observation: {said}"})
            why = f"{what}: no finish within {self.max_steps} steps"
            raise AgentError(why, error_class="invalid_output", retryable=False)
        except AgentError as exc:  # this one, or a failed request: either way, what it used
            exc.tokens, exc.cost, exc.trace = steps.tokens, steps.cost, tuple(steps.trace)
            raise

    def step(self, reply: Any, content: str, number: int, steps: Steps, task: Task) -> tuple:
        """Trace one answer; (True, the output) for a finish, else (False, the observation)."""
        action = reply.get("action") if isinstance(reply, dict) else None
        steps.record("thought", number, reply.get("thought", "") if action else content)
        if not (isinstance(action, str) and action):
            steps.record("action", number, content, tool="")
            observation = NOT_A_STEP
        elif action == FINISH:
            steps.record("action", number, reply.get("output"), tool=FINISH)
            if "output" in reply:
                return True, reply["output"]
            observation = NOT_A_STEP
        else:
            steps.record("action", number, reply.get("input"), tool=action)
            observation = self.use(action, reply.get("input"), task)
        steps.record("observation", number, observation)
        return False, observation

    def use(self, name: str, argument: Any, task: Task) -> str:
        """The tool's result as text, or "error: …", never an exception: the model can try
        another way on its next step."""
        fn = TOOLS.get(name) if name in self.tools else None
        if fn is None:
            return f"error: unknown tool {name!r}; the tools are: {', '.join(self.tools) or 'none'}"
        try:
            result = fn(argument, task)
        except Exception as exc:  # a tool's failure is the model's to handle, not a crash
            return f"error: {name} failed: {type(exc).__name__}: {exc}"
        return _text(result, OBSERVATION_CHARS)

    def protocol(self) -> str:
        """How to answer, told after the system prompt: the step format and the tools."""
        tools = "\n".join(f"- {name}: {describe(name)}" for name in self.tools) or "(none)"
        return PROTOCOL.replace("{max_steps}", str(self.max_steps)).replace("{tools}", tools)


def describe(name: str) -> str:
    """A tool's docstring's first line."""
    fn = TOOLS.get(name)
    lines = (fn.__doc__ or "").strip().splitlines() if fn is not None else []
    return lines[0] if lines else ""


def from_agent(
    agent: Agent, keep_lease: Callable[[float], None] | None = None
) -> ReactAdapter | None:
    if (llm := llm_from_agent(agent)) is None:
        return None
    config = agent.config
    return ReactAdapter(
        llm,
        max_steps=max(1, int(config.get("max_steps", 5))),
        tools=tuple(str(name) for name in config.get("tools") or ()),
        keep_lease=keep_lease or _no_lease,
    )
