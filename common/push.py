"""The only code that sends to the channel layer from sync code (STYLE.md B.7)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import current_app
from channels.layers import get_channel_layer
from django.db import transaction
from django.utils.module_loading import import_string

from common import redis as shared_redis

logger = logging.getLogger(__name__)

# Every signed-in page joins CONSOLE_GROUP (halt banner, alerts, workers); a page also joins
# the topics of what it shows (ws-connect="/ws/console/?topics=…", console.consumers), so a
# busy domain's stack goes to the pages that draw it, not to every open console.
# Group names: letters, digits, '.', '-', '_' only.
CONSOLE_GROUP = "console"
OVERVIEW_GROUP = "overview"  # the overview's cards and totals
INBOX_GROUP = "inbox"  # interrupts raised, claimed, decided, expired
BREAKERS_GROUP = "breakers"  # breaker rows
REALMS_GROUP = "realms"  # the Realms page's peers: pairing, grants, reachability, breakers
TOPICS = {OVERVIEW_GROUP, INBOX_GROUP, BREAKERS_GROUP, REALMS_GROUP}


def domain_group(domain_id: int) -> str:
    """A domain page's topic: its live stack."""
    return f"domain.{domain_id}"


def push_html(group: str, html: str) -> None:
    """Send an HTML fragment to every websocket in the group; htmx swaps it by its id.

    Each push of a group carries the group's next number (a Redis INCR, one round trip), so
    a socket that misses one, published while Daphne's subscription was down after a Redis
    restart, sees the gap and has its page resync (console.consumers). A push whose number
    Redis cannot give is sent without one, unchecked rather than not sent, and its number
    is taken once Redis answers again (_skip_later)."""
    if not html:
        return  # a render with nothing new to say (console.pending.pending_html)
    message: dict[str, Any] = {"type": "html.push", "html": html, "group": group}
    try:
        message["seq"] = shared_redis.redis_client().incr(f"push-seq:{group}")
    except redis.RedisError as exc:
        logger.warning("push to %s goes without a sequence number: %s", group, exc)
        _skip_later(group)
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


def connect() -> None:
    """Open now what the process's first push would open: the push loop's thread, the
    channel layer's Redis connection (a publish to a group nobody joins) and the client
    that numbers pushes (console.warm)."""
    shared_redis.redis_client().ping()
    nobody = get_channel_layer().group_send("warm", {"type": "warm"})
    sent = asyncio.run_coroutine_threadsafe(nobody, _push_loop())
    sent.result(timeout=SEND_TIMEOUT_SECONDS)


SKIP_RETRY_SECONDS = 1.0
_skipped: set[str] = set()
_skipper: int | None = None  # the pid whose thread takes the skipped numbers


def _skip_later(group: str) -> None:
    """A push Redis could not number was most likely lost with Redis, unseen by the numbers:
    a thread takes the group's next number once Redis answers, so the group's next push
    shows every socket a gap and their pages resync (should the push have arrived after
    all, that costs a resync). One thread per process, for every group owed."""
    global _skipper
    with _loop_lock:
        _skipped.add(group)
        if _skipper == os.getpid():
            return
        _skipper = os.getpid()
    threading.Thread(target=_take_skipped, name="console-push-skip", daemon=True).start()


def _take_skipped() -> None:
    global _skipper
    while True:
        time.sleep(SKIP_RETRY_SECONDS)
        with _loop_lock:
            if not _skipped:
                _skipper = None
                return
            group = next(iter(_skipped))
        try:
            shared_redis.redis_client().incr(f"push-seq:{group}")
        except redis.RedisError:
            continue
        with _loop_lock:
            _skipped.discard(group)


def push_on_commit(group: str, render: Callable[[], str]) -> None:
    """Render after commit, so the fragment shows committed state; best effort, so a Redis
    outage can never turn a committed change into an error."""
    transaction.on_commit(lambda: push_html(group, render()), robust=True)


def _push_fragment(args: tuple[Any, ...], countdown: float | None = None) -> None:
    """Have a worker render and push a fragment (console.tasks.push_fragment, the urgent
    queue), sent by name: this package imports no app (tests/test_layers.py)."""
    current_app.send_task(
        "console.tasks.push_fragment", args=args, countdown=countdown, queue="urgent"
    )


def push_soon_on_commit(group: str, render: str, *args: Any) -> None:
    """Push after commit, rendered at once by a worker (the urgent queue) rather than here:
    for a fragment that is slow to render (a stack of a thousand frames, every domain's
    card), so that the caller, a halt say, answers without waiting for it."""
    transaction.on_commit(lambda: _push_fragment((group, render, *args)), robust=True)


# A busy key is pushed once per window, and a change waits at most about a window for its
# push. DESIGN.md section 6 asks p99 ≤ 250 ms (aim 100) from a worker's event to 200 consoles
# at 100 events/s: with a window of a second the wait alone put the p99 near 1 s (bench.fanout).
# The window adapts to the group's subscribers: a push costs each Daphne process a frame per
# socket of the group it holds (about 0.07 ms of CPU each, bench.fanout), so the window is
# what keeps the busiest process under FRAMES_PER_SECOND for this key, between the bounds:
# 1 console gets a push every COALESCE_MIN_SECONDS, 100 consoles on a process one every 0.05 s.
COALESCE_MIN_SECONDS = 0.025
COALESCE_MAX_SECONDS = 0.2
FRAMES_PER_SECOND = 2000  # per Daphne process and key
COALESCE_SECONDS = 0.1  # the window when the subscribers are unknown (Redis did not say)
# How long a pending trailing push holds off others, should its task never run.
TRAILING_HOLD_MS = 5000


def push_coalesced_on_commit(
    group: str, key: str, render: str, *args: Any, seconds: float | None = None
) -> None:
    """push_on_commit, at most once per window per key, and the latest state always
    arrives. A change after a quiet spell is pushed at once and holds the key's guard (a
    Redis SET NX PX) for a window from its send. A change while the guard is held asks for
    one trailing push when the guard ends (console.tasks.push_fragment on the urgent queue),
    rendered then from the state of that moment, which holds the guard again; changes while
    it is pending ride on it. `render` is the dotted path of a function taking `args` and
    returning the fragment, so a worker can render it too. The window is `seconds`, or by
    default adapts to the group's subscribers (coalesce_window)."""
    guard = f"push-guard:{key}"

    def send() -> None:
        busiest = busiest_process_subscribers(group)
        if busiest == 0:
            # Nobody has a page that shows it: no render (a domain's stack of a thousand
            # frames, every few milliseconds, took the cores from the pushes people wait
            # for, bench.push). A page that opens later reads the state as it is then.
            return
        client = shared_redis.redis_client()
        window = max(1, round((_window(busiest) if seconds is None else seconds) * 1000))
        if client.set(guard, 1, nx=True, px=window):
            push_html(group, import_string(render)(*args))
            client.pexpire(guard, window)  # from the send: a slow render is not overtaken
        elif client.set(f"push-trailing:{key}", 1, nx=True, px=TRAILING_HOLD_MS):
            trailing = ("common.push.render_trailing", key, window, render, *args)
            # Sent when the guard ends.
            _push_fragment((group, *trailing), countdown=max(client.pttl(guard), 0) / 1000)

    transaction.on_commit(send, robust=True)


# --- Subscribers per group and Daphne process (written by console.consumers) -------------
# One hash per group, `push-subs:<group>`: a field per Daphne process, "<sockets> <until>",
# rewritten by the process when a socket of the group opens or closes and every
# SUBSCRIBERS_REFRESH_SECONDS; a field whose `until` passed is a process that stopped
# without saying so (a Daphne killed, or stopped before its sockets closed), not counted.
# Often enough that counts lost with a Redis restart are back within seconds: until then the
# groups' coalesced pushes are not rendered, as if nobody watched them.
SUBSCRIBERS_REFRESH_SECONDS = 5.0
SUBSCRIBERS_TTL_SECONDS = 3 * SUBSCRIBERS_REFRESH_SECONDS
SUBSCRIBERS_CACHE_SECONDS = 1.0  # how long a pushing process trusts what it read
_subscribers: dict[str, tuple[float, int]] = {}


def subscribers_key(group: str) -> str:
    return f"push-subs:{group}"


def subscribers_field(sockets: int) -> str:
    return f"{sockets} {time.time() + SUBSCRIBERS_TTL_SECONDS:.0f}"


def busiest_process_subscribers(group: str) -> int | None:
    """The most sockets of the group one Daphne process holds (what one push costs the
    busiest process), read from Redis at most once a SUBSCRIBERS_CACHE_SECONDS per group
    and process; None if Redis cannot say."""
    now = time.monotonic()
    cached = _subscribers.get(group)
    # Nobody is read again each time: the first page of a group is served from its start.
    if cached is not None and cached[1] and now - cached[0] < SUBSCRIBERS_CACHE_SECONDS:
        return cached[1]
    try:
        fields = shared_redis.redis_client().hvals(subscribers_key(group))
    except redis.RedisError:
        return None
    busiest, wall = 0, time.time()
    for value in fields:
        text = value.decode() if isinstance(value, bytes) else str(value)
        sockets, _, until = text.partition(" ")
        if until and float(until) > wall:
            busiest = max(busiest, int(sockets))
    _subscribers[group] = (now, busiest)
    return busiest


def coalesce_window(group: str) -> float:
    """The coalescing window of a group's pushes, in seconds (push_coalesced_on_commit)."""
    return _window(busiest_process_subscribers(group))


def _window(busiest: int | None) -> float:
    if busiest is None:
        return COALESCE_SECONDS
    return min(max(busiest / FRAMES_PER_SECOND, COALESCE_MIN_SECONDS), COALESCE_MAX_SECONDS)


def render_trailing(key: str, window: int, render: str, *args: Any) -> str:
    """The trailing push's render (run by console.tasks.push_fragment). The mark is cleared
    first, so a change from now on is pushed again; the guard is held for a window, so the
    key's pushes stay one per window. A guard still held means a push went out since this
    one was asked for (a render that was slow, rarely): this one waits for it to pass, so
    that the older state never arrives last."""
    client = shared_redis.redis_client()
    guard = f"push-guard:{key}"
    if (held := client.pttl(guard)) > 0:
        time.sleep(min(held, window) / 1000)
    client.delete(f"push-trailing:{key}")
    client.set(guard, 1, px=window)
    return import_string(render)(*args)


def overview_push(*, at_once: bool = False) -> None:
    """Push the overview after commit. Ordinary changes (frames starting and ending,
    interrupts, breakers) are coalesced to one push a window (coalesce_window), the latest
    state last; a halt or a lift is pushed at once (rendered by a worker), whatever was
    pushed just before."""
    if at_once:
        push_soon_on_commit(OVERVIEW_GROUP, "console.tasks.overview_html")
    else:
        push_coalesced_on_commit(OVERVIEW_GROUP, "overview", "console.tasks.overview_html")
    # Every page's header counts the pending decisions (console/_pending.html, issue 17):
    # each interrupt raised or leaving pending calls this, so the header rides it, coalesced
    # too, and is sent only when it changed (pending_html answers "" otherwise).
    push_coalesced_on_commit(CONSOLE_GROUP, "pending-decisions", "console.pending.pending_html")
