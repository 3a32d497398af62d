from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import redis
import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils.html import escape

from common.push import (
    CONSOLE_GROUP,
    SUBSCRIBERS_REFRESH_SECONDS,
    SUBSCRIBERS_TTL_SECONDS,
    TOPICS,
    subscribers_field,
    subscribers_key,
)

logger = logging.getLogger(__name__)

# A domain page's topic (common.push.domain_group).
DOMAIN_TOPIC = re.compile(r"domain\.[0-9]{1,12}")
MAX_TOPICS = 8


class ConsoleConsumer(AsyncWebsocketConsumer):
    """Joins the signed-in user to the console's group and to the topics the page asked for
    (?topics=overview,inbox,breakers,domain.<id>), and forwards pushed fragments.

    The socket is one-way: commands are htmx POSTs through views, services and the audit
    log, never websocket messages (STYLE.md B.7, B.10 rule 5).
    """

    async def connect(self) -> None:
        topics = self._topics()
        # Refused before accept, so the handshake answers 403: no role, or a topic that is
        # not one (a page never asks for one; something else is guessing).
        if topics is None or not await self._may_view():
            await self.close()
            return
        self.joined = [CONSOLE_GROUP, *topics]
        self.last_seq: dict[str, int] = {}  # per group: the highest push number (seen_seq)
        self.missing_seq: dict[str, set[int]] = {}  # per group: numbers awaited (seen_seq)
        self.closed = False
        self._tasks: set[asyncio.Future[None]] = set()  # resyncs sent when a grace ran out
        for group in self.joined:
            await FANOUT.join(group, self)
        # Counted before the page hears it is connected: a group nobody counts is not
        # rendered for (common.push.push_coalesced_on_commit).
        await SUBSCRIBERS.change(self.joined, +1)
        await self.accept()

    def _topics(self) -> list[str] | None:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        topics = [t for value in query.get("topics", []) for t in value.split(",") if t]
        if len(topics) > MAX_TOPICS:
            return None
        if any(t not in TOPICS and not DOMAIN_TOPIC.fullmatch(t) for t in topics):
            return None
        return list(dict.fromkeys(topics))

    @database_sync_to_async
    def _may_view(self) -> bool:
        """Signed in and holding a role: the same rule as the console's pages (H6)."""
        user = self.scope["user"]
        return user.is_authenticated and user.has_perm("loops.view_looprun")

    async def disconnect(self, code: int) -> None:
        self.closed = True
        for group in getattr(self, "joined", []):
            FANOUT.leave(group, self)
        if joined := getattr(self, "joined", []):
            await SUBSCRIBERS.change(joined, -1)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Ignore what the browser sends: nothing is commanded over this socket."""

    async def html_push(self, event: dict[str, Any]) -> None:
        """Forward a pushed fragment, and see from its number whether pushes of its group
        were missed (seen_seq): then the page is told to resync (app.js fetches itself once
        and swaps its live elements by id)."""
        group, seq = event.get("group"), event.get("seq")
        if isinstance(group, str) and isinstance(seq, int):
            if gap := self.seen_seq(group, seq):
                await self.send(text_data=resync_fragment(gap))
        await self.send(text_data=event["html"])

    def seen_seq(self, group: str, seq: int) -> str | None:
        """Each push carries its group's number (common.push.push_html); the gap to resync
        for, if this number shows one now.

        The first of a group on this socket sets the baseline: the page was just loaded, or
        resynced when the socket reopened. A number more than one past the last leaves the
        numbers between missing: two workers number their pushes (INCR) and publish them
        (PUBLISH) each in turn, so the missing one may simply come second, a moment later;
        it is waited for REORDER_GRACE_SECONDS before the page resyncs (without the wait,
        fifty consoles fetched their pages several times a second, bench.push). Pushes sent
        while Daphne's subscription to Redis was down after a restart never come. A number
        below the last that is not awaited means the counter restarted with Redis, the
        pushes between unknown: the page resyncs at once, as it does for a gap too wide to
        be a reordering."""
        last = self.last_seq.get(group)
        missing = self.missing_seq.setdefault(group, set())
        if last is None or seq == last + 1:
            self.last_seq[group] = seq
            return None
        if seq in missing or seq == last:
            missing.discard(seq)  # the late one of a reordered pair (or a repeat)
            return None
        self.last_seq[group] = seq
        if last < seq <= last + MAX_REORDERED:
            awaited = set(range(last + 1, seq))
            missing |= awaited
            gap = f"{group}:{last}->{seq}"
            loop = asyncio.get_running_loop()
            loop.call_later(REORDER_GRACE_SECONDS, self._overdue, group, awaited, gap)
            return None
        missing.clear()
        return f"{group}:{last}->{seq}"

    def _overdue(self, group: str, awaited: set[int], gap: str) -> None:
        """The grace is over: what is still missing of `awaited` was lost."""
        missing = self.missing_seq.get(group, set())
        if self.closed or not awaited & missing:
            return
        missing -= awaited
        self._tasks.add(task := asyncio.ensure_future(self.send(text_data=resync_fragment(gap))))
        task.add_done_callback(self._tasks.discard)


# Pushes of one group numbered by two workers reach Daphne in another order than numbered
# within a few milliseconds (bench.push); a number missing longer than this was lost.
REORDER_GRACE_SECONDS = 0.5
MAX_REORDERED = 50  # a wider gap is a loss at once (a Redis restart), not a reordering


def resync_fragment(gap: str) -> str:
    """Replaces base.html's hidden #ws-resync; app.js resyncs the page when it arrives."""
    return f'<div id="ws-resync" hidden hx-swap-oob="true" data-gap="{escape(gap)}"></div>'


class Subscribers:
    """This Daphne process's sockets per group, told to Redis for the pushing side's
    coalescing window (common.push.coalesce_window): one field of `push-subs:<group>` per
    process, rewritten when a socket joins or leaves and every SUBSCRIBERS_REFRESH_SECONDS,
    so a process that stops without a word drops out when its fields' time passes. Best
    effort: without Redis the pushes use the fixed window."""

    def __init__(self) -> None:
        self.sockets: Counter[str] = Counter()
        self.field = f"{socket.gethostname()}:{os.getpid()}"
        # The client and the refresher of the event loop they belong to (Daphne has one;
        # the tests start one per test).
        self.loop: asyncio.AbstractEventLoop | None = None
        self.client: aioredis.Redis | None = None
        self.refresher: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()
        self.dirty: set[str] = set()  # groups whose count changed since it was written

    async def change(self, groups: list[str], by: int) -> None:
        for group in groups:
            self.sockets[group] += by
        if self.loop is not asyncio.get_running_loop():
            self.loop = asyncio.get_running_loop()
            # One connection, one write at a time.
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.REDIS_URL, max_connections=1, socket_timeout=2, timeout=2
            )
            self.client, self.refresher = aioredis.Redis(connection_pool=pool), None
            self.lock, self.dirty = asyncio.Lock(), set()
        self.dirty.update(groups)
        async with self.lock:
            # The counts as they are now, written last: a write queued behind this one
            # finds nothing left to write (sockets opening at once share a write).
            if self.dirty:
                dirty, self.dirty = list(self.dirty), set()
                await self.write(dirty)
        if self.refresher is None or self.refresher.done():
            self.refresher = self.loop.create_task(self.refresh())

    async def write(self, groups: list[str]) -> None:
        assert self.client is not None
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for group in groups:
                    key, count = subscribers_key(group), self.sockets[group]
                    if count > 0:
                        pipe.hset(key, self.field, subscribers_field(count))
                        pipe.expire(key, round(SUBSCRIBERS_TTL_SECONDS))
                    else:
                        pipe.hdel(key, self.field)
                await pipe.execute()
        except (redis.RedisError, OSError) as exc:
            logger.warning("the subscribers of %s are not counted: %s", ", ".join(groups), exc)

    async def refresh(self) -> None:
        while True:
            await asyncio.sleep(SUBSCRIBERS_REFRESH_SECONDS)
            for group in [g for g, n in self.sockets.items() if n <= 0]:
                del self.sockets[group]
            if not self.sockets:
                return
            async with self.lock:
                await self.write(list(self.sockets))


SUBSCRIBERS = Subscribers()


class Fanout:
    """One subscription per group and Daphne process, shared by every socket of the group
    there: a push is received and decoded once, then forwarded to each socket in turn
    (ConsoleConsumer.html_push), instead of once per socket through each consumer's own
    channel, queue and dispatch task (three quarters of a frame's cost in Daphne,
    docs/BENCHMARKS.md, issue 17). The listener of a group ends with its last socket;
    should it fail, its sockets are closed, so their pages reconnect and resync."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.members: dict[str, dict[ConsoleConsumer, None]] = {}  # in joining order
        self.listeners: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}

    async def join(self, group: str, consumer: ConsoleConsumer) -> None:
        if self.loop is not asyncio.get_running_loop():
            self.loop, self.members, self.listeners = asyncio.get_running_loop(), {}, {}
        self.members.setdefault(group, {})[consumer] = None
        if group not in self.listeners:
            ready = asyncio.Event()
            task = self.loop.create_task(self.listen(group, consumer.channel_layer, ready))
            self.listeners[group] = (task, ready)
        task, ready = self.listeners[group]
        if not ready.is_set():  # subscribed before the socket is accepted, as group_add was
            waiter = self.loop.create_task(ready.wait())
            await asyncio.wait([waiter, task], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if task.done() and not ready.is_set():
                self.listeners.pop(group, None)
                task.result()  # the layer refused: say why
                raise RuntimeError(f"the subscription to {group} ended")

    def leave(self, group: str, consumer: ConsoleConsumer) -> None:
        members = self.members.get(group, {})
        members.pop(consumer, None)
        if not members and group in self.listeners:
            self.members.pop(group, None)
            self.listeners.pop(group)[0].cancel()

    async def listen(self, group: str, layer: Any, ready: asyncio.Event) -> None:
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        ready.set()
        try:
            while True:
                message = await layer.receive(channel)
                if message.get("type") != "html.push":
                    continue
                for consumer in list(self.members.get(group, ())):
                    try:
                        await consumer.html_push(message)
                    except Exception:
                        logger.exception("a push to one socket of %s failed", group)
        except Exception:
            logger.exception("the subscription to %s failed; its sockets are closed", group)
            if self.listeners.get(group, (None,))[0] is asyncio.current_task():
                del self.listeners[group]
            for consumer in list(self.members.pop(group, ())):
                await consumer.close()
        finally:
            with contextlib.suppress(Exception):  # Redis down: the subscription went with it
                await asyncio.shield(layer.group_discard(group, channel))


FANOUT = Fanout()
