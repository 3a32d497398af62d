"""Remote HTTP agents: POST {url}/bid and POST {url}/perform, signed like our webhooks.

Config: {"url": base, "secret": … or "secret_env": "ENV_NAME", "timeout_s": 10,
"bid_timeout_s": 2}. Each request carries the task as JSON (agent, run, iteration, phase,
task_type, payload, context, feedback, retry_context) and the X-Console-Timestamp and
X-Console-Signature headers of common.signing. The agent answers

    /bid      {"confidence": 0.8, "est_cost": 0.01}  or  {"decline": "reason"}
    /perform  {"output": …, "cost": 0.0, "tokens": 0, "rationale": "…",
               "escalate": {"reason": "…", "proposal": …, "severity": "warning"},
               "metrics": {"name": 1.0}, "spawn": [{"blueprint": "…", "input": {…}}]}

and every failure is classified for the retry layer (CONCEPTS 34, 58).
"""

from __future__ import annotations

import email.utils
import http.client
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.core.serializers.json import DjangoJSONEncoder

from common.signing import shared_secret, signed_headers
from loops.agents.base import AgentError
from loops.messages import Bid, Decline, Escalation, Outcome, Spawn, Task

if TYPE_CHECKING:
    from email.message import Message

    from loops.models import Agent

MAX_ANSWER_BYTES = 1_000_000
MAX_DETAIL_CHARS = 500
SEVERITIES = ("info", "warning", "critical")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an error: following it would re-send the signed body elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, data: bytes, *, headers: dict[str, str], timeout: float, what: str) -> Any:
    """POST a JSON body and return the JSON answer, or raise a classified AgentError."""
    request = urllib.request.Request(  # noqa: S310 — agents' URLs are http(s), set by admins
        url,
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": "loop-stack-console",
            **headers,
        },
    )
    try:
        with _opener.open(request, timeout=timeout) as response:
            raw = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read(4096).decode("utf-8", "replace")
        except OSError:
            detail = ""
        exc.close()
        raise http_error(exc.code, detail, exc.headers, what) from exc
    except TimeoutError as exc:  # connect or read took longer than the timeout
        raise AgentError(f"{what}: no answer within {timeout:g} s", error_class="timeout") from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            message = f"{what}: no answer within {timeout:g} s"
            raise AgentError(message, error_class="timeout") from exc
        raise AgentError(f"{what}: {exc.reason}", error_class="connection") from exc
    except (http.client.HTTPException, OSError) as exc:  # reset, closed mid-answer
        raise AgentError(f"{what}: {exc!r}", error_class="connection") from exc
    if len(raw) > MAX_ANSWER_BYTES:
        raise invalid(what, f"the answer is larger than {MAX_ANSWER_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise invalid(what, f"the answer is not JSON ({exc})") from exc


def http_error(status: int, detail: str, headers: Message, what: str) -> AgentError:
    """CONCEPTS 58: 429, 408 and 5xx may pass; other refusals will not change by asking again."""
    detail = " ".join(detail.split())
    message = f"{what}: HTTP {status}" + (f": {detail[:MAX_DETAIL_CHARS]}" if detail else "")
    if status == 429:
        wait = retry_after(headers.get("Retry-After"))
        return AgentError(message, error_class="rate_limited", retry_after=wait)
    if status == 408:
        return AgentError(message, error_class="timeout")
    if status >= 500:
        return AgentError(message, error_class="server_error")
    if status == 451 or _says(detail, "policy"):
        return AgentError(message, error_class="policy")
    if status in (400, 422):
        return AgentError(message, error_class="request_validation")
    return AgentError(message, error_class="client_error")


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _says(detail: str, code: str) -> bool:
    """Whether an error body is {"error": code, …} (the agent's own classification)."""
    try:
        body = json.loads(detail)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") == code


def invalid(what: str, why: str) -> AgentError:
    # Not retried at L1: the agent answered, wrongly; validation (L2) sees the failure.
    return AgentError(f"{what}: {why}", error_class="invalid_output", retryable=False)


def task_body(agent: str, task: Task, retry_context: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "agent": agent,
        "run": task.run_id,
        "iteration": task.iteration,
        "phase": task.phase,
        "task_type": task.task_type,
        "payload": task.payload,
        "context": task.context,
        "feedback": list(task.feedback),
        "retry_context": retry_context,
    }


@dataclass(frozen=True)
class HttpAdapter:
    name: str
    url: str
    secret: str
    secret_env: str = ""
    timeout_s: float = 10.0
    bid_timeout_s: float = 2.0
    remote: ClassVar[bool] = True

    def bid(self, task: Task, timeout_s: float | None = None) -> Bid | Decline:
        what = f"agent {self.name} /bid"
        timeout = self.bid_timeout_s if timeout_s is None else min(timeout_s, self.bid_timeout_s)
        answer = self._post("bid", task_body(self.name, task, None), timeout, what)
        if isinstance(answer, dict) and "decline" in answer:
            return Decline(str(answer["decline"] or "declined"))
        try:
            return Bid(_number(answer["confidence"]), _number(answer.get("est_cost", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise invalid(what, f"not a bid or a decline ({exc!r})") from exc

    def perform(self, task: Task, retry_context: dict[str, Any] | None = None) -> Outcome:
        what = f"agent {self.name} /perform"
        answer = self._post("perform", task_body(self.name, task, retry_context), None, what)
        return outcome_from(answer, what)

    def _post(self, path: str, body: dict[str, Any], timeout: float | None, what: str) -> Any:
        if not self.secret:
            # Never call unsigned: the agent could not tell us from anyone else.
            why = f"{what}: no secret (environment variable {self.secret_env or '?'} is unset)"
            raise AgentError(why, error_class="request_validation")
        data = json.dumps(body, cls=DjangoJSONEncoder).encode()
        return post_json(
            f"{self.url}/{path}",
            data,
            headers=signed_headers(self.secret, data),
            timeout=self.timeout_s if timeout is None else timeout,
            what=what,
        )


def outcome_from(answer: Any, what: str) -> Outcome:
    """The perform answer as an Outcome, or invalid_output naming what is wrong."""
    if not isinstance(answer, dict) or "output" not in answer:
        raise invalid(what, "the answer has no output")
    try:
        tokens = answer.get("tokens", 0)
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise ValueError(f"tokens must be a whole number ≥ 0, not {tokens!r}")
        metrics = answer.get("metrics") or {}
        return Outcome(
            output=answer["output"],
            cost=_number(answer.get("cost", 0.0)),
            tokens=tokens,
            rationale=str(answer.get("rationale", "")),
            spawn=tuple(
                Spawn(str(s["blueprint"]), dict(s.get("input", {})))
                for s in answer.get("spawn") or ()
            ),
            escalate=_escalation(answer.get("escalate")),
            metrics={str(k): _number(v, negative=True) for k, v in dict(metrics).items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise invalid(what, f"malformed answer ({exc})") from exc


def _escalation(asked: Any) -> Escalation | None:
    if asked is None:
        return None
    severity = asked.get("severity", "warning")
    if severity not in SEVERITIES:
        raise ValueError(f"escalate.severity must be one of {', '.join(SEVERITIES)}")
    return Escalation(
        reason=str(asked["reason"]),
        proposal=asked.get("proposal"),
        severity=severity,
        rationale=str(asked.get("rationale", "")),
    )


def _number(value: Any, *, negative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{value!r} is not a number")
    if value != value or value in (float("inf"), float("-inf")) or (value < 0 and not negative):
        raise ValueError(f"{value!r} is out of range")
    return float(value)


def from_agent(agent: Agent) -> HttpAdapter | None:
    """None without a URL: this console cannot reach the agent (it may still beat and bid
    through the API)."""
    config = agent.config
    if not config.get("url"):
        return None
    secret_env = str(config.get("secret_env", ""))
    return HttpAdapter(
        name=agent.name,
        url=str(config["url"]).rstrip("/"),
        secret=shared_secret(config),
        secret_env=secret_env,
        timeout_s=float(config.get("timeout_s", 10.0)),
        bid_timeout_s=float(config.get("bid_timeout_s", 2.0)),
    )
