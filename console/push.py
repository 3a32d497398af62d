"""The only code that sends to the channel layer from sync code (STYLE.md B.7)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer
from django.db import transaction
from django.utils.module_loading import import_string

# Every signed-in page joins CONSOLE_GROUP (halt banner, alerts, workers); a page also joins
# the topics of what it shows (ws-connect="/ws/console/?topics=…", console.consumers), so a
# busy domain's stack goes to the pages that draw it, not to every open console.
# Group names: letters, digits, '.', '-', '_' only.
CONSOLE_GROUP = "console"
OVERVIEW_GROUP = "overview"  # the overview's cards and totals
INBOX_GROUP = "inbox"  # interrupts raised, claimed, decided, expired
BREAKERS_GROUP = "breakers"  # breaker rows
TOPICS = {OVERVIEW_GROUP, INBOX_GROUP, BREAKERS_GROUP}


def domain_group(domain_id: int) -> str:
    """A domain page's topic: its live stack."""
    return f"domain.{domain_id}"


def push_html(group: str, html: str) -> None:
    """Send an HTML fragment to every websocket in the group; htmx swaps it by its id."""
    message = {"type": "html.push", "html": html}
    sent = asyncio.run_coroutine_threadsafe(
        get_channel_layer().group_send(group, message), _push_loop()
    )
    sent.result(timeout=SEND_TIMEOUT_SECONDS)


SEND_TIMEOUT_SECONDS = 5.0
_loop: tuple[int, asyncio.AbstractEventLoop] | None = None
_loop_lock = threading.Lock()


def _push_loop() -> asyncio.AbstractEventLoop:
    """One event loop per process, on a thread of its own, for every push from sync code.

    The channel layer keeps its Redis connection per event loop. async_to_sync, called
    outside async code, runs each call in a new loop, so every push connected anew (about
    5 ms of the worker event → browser time); and it refuses a thread whose own loop is
    running. Keyed by pid: a forked Celery child must not use its parent's loop, whose
    thread did not survive the fork."""
    global _loop
    with _loop_lock:
        if _loop is None or _loop[0] != os.getpid():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="console-push", daemon=True).start()
            _loop = (os.getpid(), loop)
        return _loop[1]


def push_on_commit(group: str, render: Callable[[], str]) -> None:
    """Render after commit, so the fragment shows committed state; best effort, so a Redis
    outage can never turn a committed change into an error."""
    transaction.on_commit(lambda: push_html(group, render()), robust=True)


def push_soon_on_commit(group: str, render: str, *args: Any) -> None:
    """Push after commit, rendered at once by a worker (the urgent queue) rather than here:
    for a fragment that is slow to render (a stack of a thousand frames, every domain's
    card), so that the caller, a halt say, answers without waiting for it."""
    from console.tasks import push_fragment

    transaction.on_commit(
        lambda: push_fragment.apply_async((group, render, *args), queue="urgent"), robust=True
    )


def push_coalesced_on_commit(
    group: str, key: str, render: str, *args: Any, seconds: int = 1
) -> None:
    """push_on_commit, at most once per `seconds` per key, and the latest state always
    arrives: the first change of a burst is pushed at once (a Redis SET NX EX guard); the
    rest of the burst is one trailing push `seconds` later, rendered then, from the state of
    that moment (console.tasks.push_fragment). `render` is the dotted path of a function
    taking `args` and returning the fragment, so a worker can render it too."""
    from console.liveness import redis_client
    from console.tasks import push_fragment

    def send() -> None:
        client = redis_client()
        if client.set(f"push-guard:{key}", 1, nx=True, ex=seconds):
            push_html(group, import_string(render)(*args))
        elif client.set(f"push-trailing:{key}", 1, nx=True, ex=seconds):
            push_fragment.apply_async((group, render, *args), countdown=seconds, queue="urgent")

    transaction.on_commit(send, robust=True)
