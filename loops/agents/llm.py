"""LLM agents behind any OpenAI-compatible chat-completions server (vLLM, llama.cpp server,
Ollama, …).

Config: {"base_url": "http://127.0.0.1:8000/v1", "model": "…", "api_key_env": "ENV_NAME"
(optional), "prompt": a template with {task_type} {payload} {feedback} {retry_context}
{context}, "system": "…", "confidence": 0.6, "est_cost": 0.0, "cost_per_1k_tokens": 0.0,
"timeout_s": 60, "max_prompt_chars": 8000}.

The bid is the configured confidence (no call). perform() sends one chat completion at
temperature 0; the output is the answer parsed as JSON when it parses, else its text; the
server's token count is the call's tokens, priced by cost_per_1k_tokens. When the server
says the prompt is longer than the model's context, the next attempt sends the context part
of the prompt at half the length (CONCEPTS 59).

With "mode": "react" the agent reasons, acts with tools and observes over several
completions instead (loops.agents.react, CONCEPTS 61).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder

from loops.agents.base import AgentError
from loops.agents.http import invalid, post_json
from loops.messages import Bid, Outcome, Task

if TYPE_CHECKING:
    from loops.models import Agent

PROMPT = (
    "Task: {task_type}\n"
    "Payload: {payload}\n"
    "What the validators said about the last round: {feedback}\n"
    "The previous attempt: {retry_context}\n"
    "Context: {context}\n"
    "Answer with one JSON value and nothing else."
)
SYSTEM = "You are {name}, an agent in a loop stack. Do the task you are given, exactly."
PLACEHOLDERS = ("task_type", "payload", "feedback", "retry_context", "context")
# How vLLM, llama.cpp server, Ollama and OpenAI word a prompt longer than the model takes.
CONTEXT_TOO_LONG = re.compile(
    r"context[ _-]?(length|size|window)|maximum context|exceed_context|too many tokens|"
    r"prompt is too long",
    re.IGNORECASE,
)
FENCED = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n```\s*$", re.DOTALL)


def _json(value: Any) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)


def _fill(template: str, parts: dict[str, str]) -> str:
    # Not str.format: a template may hold JSON examples, whose braces are not placeholders.
    for key in PLACEHOLDERS:
        template = template.replace("{" + key + "}", parts.get(key, ""))
    return template


def render(
    template: str,
    task: Task,
    retry_context: dict[str, Any] | None,
    *,
    max_chars: int,
    context_share: float = 1.0,
) -> str:
    """The prompt: the task's parts in full, and as much of its context as max_chars leaves
    room for, times context_share (halved after each context-length error)."""
    previous = "none"
    if retry_context:
        previous = (
            f"attempt {retry_context.get('attempt')} failed "
            f"({retry_context.get('error_class')}): {str(retry_context.get('message'))[:200]}"
        )
    parts = {
        "task_type": task.task_type,
        "payload": _json(task.payload),
        "feedback": "; ".join(task.feedback) or "none",
        "retry_context": previous,
    }
    context = _json(task.context)
    room = max(0, max_chars - len(_fill(template, parts)))
    keep = int(min(len(context), room) * context_share)
    if keep < len(context):
        context = context[:keep] + " …(cut)"
    return _fill(template, {**parts, "context": context})


def parse_output(text: str) -> Any:
    """JSON if the answer is JSON (also inside one ``` fence), else the text itself."""
    stripped = text.strip()
    if fenced := FENCED.match(stripped):
        stripped = fenced.group(1)
    try:
        return json.loads(stripped)
    except ValueError:
        return text


@dataclass(frozen=True)
class LlmAdapter:
    name: str
    base_url: str
    model: str
    api_key_env: str = ""
    prompt: str = PROMPT
    system: str = SYSTEM
    confidence: float = 0.6
    est_cost: float = 0.0
    cost_per_1k_tokens: float = 0.0
    timeout_s: float = 60.0
    max_prompt_chars: int = 8000
    remote: ClassVar[bool] = True
    bid_timeout_s: ClassVar[float] = 0.0  # bids make no call

    def bid(self, task: Task, timeout_s: float | None = None) -> Bid:
        return Bid(confidence=self.confidence, est_cost=self.est_cost)

    def perform(self, task: Task, retry_context: dict[str, Any] | None = None) -> Outcome:
        what = f"agent {self.name} {self.model}"
        share = float((retry_context or {}).get("context_share", 1.0))
        answer = self.complete(self.messages(task, retry_context, share), share, what)
        return self.outcome(answer, what)

    def messages(
        self, task: Task, retry_context: dict[str, Any] | None, share: float
    ) -> list[dict[str, str]]:
        """The system message and the task's prompt, its context cut to share."""
        prompt = render(
            self.prompt, task, retry_context, max_chars=self.max_prompt_chars, context_share=share
        )
        return [
            {"role": "system", "content": self.system.replace("{name}", self.name)},
            {"role": "user", "content": prompt},
        ]

    def complete(self, messages: list[dict[str, str]], share: float, what: str) -> Any:
        """One chat completion at temperature 0: the server's answer, or a classified error."""
        body = {"model": self.model, "messages": messages, "temperature": 0}
        headers = {}
        if self.api_key_env:
            if not (key := os.environ.get(self.api_key_env, "")):
                why = f"{what}: the environment variable {self.api_key_env} is unset"
                raise AgentError(why, error_class="request_validation")
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body, cls=DjangoJSONEncoder).encode()
        url = f"{self.base_url}/chat/completions"
        try:
            return post_json(url, data, headers=headers, timeout=self.timeout_s, what=what)
        except AgentError as exc:
            if exc.error_class in ("request_validation", "client_error") and (
                CONTEXT_TOO_LONG.search(exc.message)
            ):
                raise AgentError(
                    exc.message, error_class="context_length", adjust={"context_share": share / 2}
                ) from exc
            if share < 1:  # keep the prompt short after another kind of error
                exc.adjust.setdefault("context_share", share)
            raise

    def outcome(self, answer: Any, what: str) -> Outcome:
        content = content_of(answer, what)
        tokens = tokens_used(answer.get("usage"))
        return Outcome(
            output=parse_output(content),
            cost=tokens / 1000 * self.cost_per_1k_tokens,
            tokens=tokens,
            rationale=f"{self.model}: {tokens} tokens",
        )


def content_of(answer: Any, what: str) -> str:
    """The answer's text, or the error that says why there is none."""
    try:
        choice = answer["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise invalid(what, "the answer has no choices[0].message.content") from exc
    if choice.get("finish_reason") == "content_filter":
        raise AgentError(f"{what}: the server's content filter refused", error_class="policy")
    if not isinstance(content, str):
        raise invalid(what, "the message content is not text")
    return content


def tokens_used(usage: Any) -> int:
    """usage.total_tokens, or prompt + completion where a server leaves the total out."""
    if not isinstance(usage, dict):
        return 0
    counts: list[Any] = [usage.get("total_tokens")]
    if not _count(counts[0]):
        counts = [usage.get("prompt_tokens"), usage.get("completion_tokens")]
    return sum(int(n) for n in counts if _count(n))


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def from_agent(agent: Agent) -> LlmAdapter | None:
    config = agent.config
    if not (config.get("base_url") and config.get("model")):
        return None
    return LlmAdapter(
        name=agent.name,
        base_url=str(config["base_url"]).rstrip("/"),
        model=str(config["model"]),
        api_key_env=str(config.get("api_key_env", "")),
        prompt=str(config.get("prompt") or PROMPT),
        system=str(config.get("system") or SYSTEM),
        confidence=float(config.get("confidence", 0.6)),
        est_cost=float(config.get("est_cost", 0.0)),
        cost_per_1k_tokens=float(config.get("cost_per_1k_tokens", 0.0)),
        timeout_s=float(config.get("timeout_s", 60.0)),
        max_prompt_chars=int(config.get("max_prompt_chars", 8000)),
    )
