"""A peer realm as an agent of a broadcast (DESIGN.md section 8, CONCEPTS 44): declared as
remote_agent(domain, name, adapter="realm", config={"realm": slug, "blueprint": name}); and
any A2A agent as one: remote_agent(domain, name, adapter="a2a", config={"url": its JSON-RPC
endpoint (or "url_env"), "skill": …, "token_env": …, "confidence": 0.5}). A2A has no bidding:
such an agent bids the confidence it is declared with, and performs as a SendMessage
followed with GetTask, with a bearer token instead of our signature.

bid: a signed `loopstacks/Bid` asks the peer, which bids or declines by its own rules (its
grant to us, its halts, its load, its own agents' bids), within the bid window.
perform: a signed SendMessage starts the blueprint there as a root run whose origin names
our run; the call then follows it with GetTask until it ends (inside the call's timeout).
The peer's address and whether the pairing is approved are in the agent's config, kept
there by the realms services (realms.services.peers), so that a bid asked in one of the
broadcast's threads opens no database connection."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx

from loops.agents.base import AgentError
from loops.agents.http import task_body
from loops.messages import FRAME, Bid, Decline, Outcome, Spawn, Task
from realms import wire
from realms.cards import EXTENSION
from realms.identity import me

POLL_S = 0.1


@dataclass(frozen=True)
class RealmAdapter:
    name: str
    realm: str
    blueprint: str
    url: str
    paired: bool
    timeout_s: float = 60.0
    remote: ClassVar[bool] = True

    def bid(self, task: Task, timeout_s: float | None = None) -> Bid | Decline:
        if not self.paired or not self.url:
            return Decline(f"realm {self.realm} is not an approved peer")
        body = {"blueprint": self.blueprint, "task": task_body(self.name, task, None)}
        answer = self._rpc("loopstacks/Bid", body, timeout_s or 2.0)
        if "decline" in answer:
            return Decline(f"realm {self.realm}: {answer['decline']}")
        try:
            return Bid(float(answer["confidence"]), float(answer.get("est_cost", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise AgentError(
                f"realm {self.realm}: not a bid ({exc!r})", error_class="invalid_output"
            ) from exc

    def perform(self, task: Task, retry_context: dict[str, Any] | None = None) -> Outcome:
        """Selected, the peer runs the task as a frame of this run's stack: the call asks
        the engine to spawn the remote child "<realm>:<blueprint>" (which the broadcasting
        blueprint declares among its children), and the contribution's output names that
        frame, whose result the judge takes as the contribution's (loops.engine.judge)."""
        if not self.paired or not self.url:
            raise AgentError(f"realm {self.realm} is not an approved peer", error_class="policy")
        key = f"{self.name}#{task.iteration}"
        value = task.payload or task.context.get("input", {})
        return Outcome(
            output={FRAME: key},
            spawn=(Spawn(f"{self.realm}:{self.blueprint}", value, key=key),),
            rationale=f"realm {self.realm} runs {self.blueprint} as a frame of this stack",
        )

    def _message(self, task: Task, key: str, ext: dict[str, Any]) -> dict[str, Any]:
        value = task.payload or task.context.get("input", {})
        return {
            "messageId": key,
            "role": "ROLE_USER",
            "parts": [{"data": {"blueprint": self.blueprint, "input": value}}],
            "extensions": [EXTENSION],
            "metadata": {EXTENSION: ext},
        }

    def _endpoint(self) -> str:
        return f"{self.url}/a2a"

    def _headers(self, url: str, raw: bytes) -> dict[str, str]:
        return wire.signed_headers("POST", url, raw)

    def _rpc(self, method: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        url = self._endpoint()
        body = {"jsonrpc": "2.0", "id": method, "method": method, "params": params}
        raw = json.dumps(body, default=str).encode()
        headers = {**self._headers(url, raw), "A2A-Version": "1.0"}
        try:
            response = wire.http().post(url, content=raw, headers=headers, timeout=timeout)
            answer = response.json()
        except httpx.TimeoutException as exc:
            raise AgentError(
                f"realm {self.realm}: no answer within {timeout:g} s", error_class="timeout"
            ) from exc
        except (httpx.HTTPError, ValueError) as exc:
            raise AgentError(f"realm {self.realm}: {exc}", error_class="connection") from exc
        if response.status_code >= 500:
            raise AgentError(
                f"realm {self.realm}: HTTP {response.status_code}", error_class="server_error"
            )
        if "error" in answer or response.status_code >= 400:
            detail = (answer.get("error") or {}).get("message", response.text[:300])
            raise AgentError(f"realm {self.realm}: {detail}", error_class="client_error")
        result = answer.get("result")
        return result if isinstance(result, dict) else {}


def _final(task: dict[str, Any]) -> bool:
    state = task.get("status", {}).get("state", "")
    return state in (
        "TASK_STATE_COMPLETED",
        "TASK_STATE_FAILED",
        "TASK_STATE_CANCELED",
        "TASK_STATE_REJECTED",
    )


@dataclass(frozen=True)
class A2aAdapter(RealmAdapter):
    """Any A2A agent: `url` is its JSON-RPC endpoint, `blueprint` the skill asked for."""

    token: str = ""
    confidence: float = 0.5

    def bid(self, task: Task, timeout_s: float | None = None) -> Bid | Decline:
        return Bid(self.confidence) if self.url else Decline("no A2A endpoint is configured")

    def perform(self, task: Task, retry_context: dict[str, Any] | None = None) -> Outcome:
        if not self.url:
            raise AgentError("no A2A endpoint is configured", error_class="policy")
        key = f"{me().slug}:broadcast:{task.run_id}:{task.iteration}:{task.phase}:{self.name}"
        ext = {
            "origin": {"realm": me().slug, "run": task.run_id, "root": task.run_id},
            "path": [me().slug],
            "ttl": 8,
            "depth": 1,
            "max_depth": 8,
            "key": key,
        }
        deadline = time.monotonic() + self.timeout_s
        message = self._message(task, key, ext)
        task_answer = self._rpc("SendMessage", {"message": message}, 10.0).get("task", {})
        while not _final(task_answer):
            if time.monotonic() > deadline:
                raise AgentError(
                    f"realm {self.realm}: no result within {self.timeout_s:g} s",
                    error_class="timeout",
                )
            time.sleep(POLL_S)
            task_answer = self._rpc("GetTask", {"id": task_answer.get("id", "")}, 10.0)
        state = task_answer["status"]["state"]
        meta = task_answer.get("metadata", {}).get(EXTENSION, {})
        if state != "TASK_STATE_COMPLETED":
            why = meta.get("reason") or meta.get("exit_reason") or state
            error_class = "policy" if state == "TASK_STATE_REJECTED" else "error"
            raise AgentError(f"realm {self.realm}: {why}", error_class=error_class, retryable=False)
        parts = [p for a in task_answer.get("artifacts", []) for p in a.get("parts", [])]
        output = next(
            (p.get("data", p.get("text")) for p in parts if {"data", "text"} & set(p)), None
        )
        return Outcome(
            output=output,
            cost=float(meta.get("cost") or 0),
            rationale=f"run {task_answer['id']} in realm {self.realm}",
        )

    def _message(self, task: Task, key: str, ext: dict[str, Any]) -> dict[str, Any]:
        value = task.payload or task.context.get("input", {})
        return {
            "messageId": key,
            "role": "ROLE_USER",
            "parts": [{"data": value}],
            "metadata": {"skill": self.blueprint},
        }

    def _endpoint(self) -> str:
        return self.url

    def _headers(self, url: str, raw: bytes) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"}


def from_a2a_agent(agent) -> A2aAdapter:
    config = agent.config
    # Like a secret, an address may be named rather than written (url_env).
    url = str(config.get("url") or os.environ.get(str(config.get("url_env", "")), ""))
    return A2aAdapter(
        name=agent.name,
        realm=url,
        blueprint=str(config.get("skill", "")),
        url=url,
        paired=True,
        timeout_s=float(config.get("timeout_s", 60.0)),
        token=os.environ.get(str(config.get("token_env", "")), ""),
        confidence=float(config.get("confidence", 0.5)),
    )


def from_agent(agent) -> RealmAdapter:
    config = agent.config
    return RealmAdapter(
        name=agent.name,
        realm=str(config.get("realm", "")),
        blueprint=str(config.get("blueprint", "")),
        url=str(config.get("url", "")),
        paired=bool(config.get("paired", False)),
        timeout_s=float(config.get("timeout_s", 60.0)),
    )
