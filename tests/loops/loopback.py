"""Real HTTP servers on loopback for the adapter and retry tests: a remote agent's /bid and
/perform, or an OpenAI-compatible /v1/chat/completions, each answering from a script and
recording what it was asked. Nothing here touches the database: the servers' threads run
outside the test's transaction, as a remote agent does."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.utils import timezone

from loops import engine, services
from loops.models import Agent, Domain, LoopRun

SECRET = "wire-shared-secret"


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able; bytes or str are sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    at: float  # time.monotonic()

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Script = Reply | Callable[[Received], Reply]


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1, port 0. script(path, a, b, c) answers the path's
    requests with a, then b, then c for every request after."""

    def __init__(self) -> None:
        self.routes: dict[str, list[Script]] = {
            "/bid": [Reply(body={"confidence": 0.8, "est_cost": 0.0})],
            "/perform": [Reply(body={"output": {"ok": True}})],
        }
        self.received: list[Received] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def script(self, path: str, *replies: Script) -> None:
        self.routes[path] = list(replies)

    def asked(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    def reply_to(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            queue = self.routes.get(request.path)
            if not queue:
                return Reply(404, {"error": "not_found"})
            script = queue.pop(0) if len(queue) > 1 else queue[0]
        return script(request) if callable(script) else script

    def close(self) -> None:
        self.stopping.set()  # slow replies stop waiting
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(server: LoopbackServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {name.lower(): value for name, value in self.headers.items()}
            request = Received(self.path, headers, body, time.monotonic())
            reply = server.reply_to(request)
            if reply.delay and server.stopping.wait(reply.delay):
                return
            raw = reply.body
            if not isinstance(raw, bytes | str):
                raw = json.dumps(raw)
            data = raw.encode() if isinstance(raw, str) else raw
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout): as a real server sees it

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def refused_url() -> str:
    """An address where nothing listens: the connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def http_agent(name: str, url: str, capability: str = "wire", **config: Any) -> Agent:
    """A remote HTTP agent of the wire domain, beating now, at url."""
    return Agent.objects.create(
        domain=Domain.objects.get(slug="wire"),
        name=name,
        adapter=Agent.Adapter.HTTP,
        config={"url": url, "secret": SECRET, "timeout_s": 2, "bid_timeout_s": 1, **config},
        capabilities=[capability],
        heartbeat_at=timezone.now(),
    )


def llm_agent(name: str, base_url: str, capability: str = "llm", **config: Any) -> Agent:
    return Agent.objects.create(
        domain=Domain.objects.get(slug="wire"),
        name=name,
        adapter=Agent.Adapter.LLM,
        config={"base_url": base_url, "model": "tiny-test", "timeout_s": 2, **config},
        capabilities=[capability],
    )


def completion(content: str, tokens: int = 42) -> dict[str, Any]:
    """What vLLM, llama.cpp server and Ollama answer on /v1/chat/completions."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "tiny-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": tokens - 2, "completion_tokens": 2, "total_tokens": tokens},
    }


def run_to_end(blueprint: str, **input: Any) -> LoopRun:
    """Start a wire run and step it in this process until it stops running."""
    return step_to_end(services.run_start(domain="wire", blueprint=blueprint, input=input))


def step_to_end(run: LoopRun, steps: int = 20) -> LoopRun:
    for _ in range(steps):
        run.refresh_from_db()
        if run.state != LoopRun.State.RUNNING:
            break
        engine.advance(run_id=run.pk)
    run.refresh_from_db()
    return run


def attempt_times(attempts: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(a["started"]) for a in attempts]
