from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils.html import escape

from common.push import CONSOLE_GROUP, TOPICS

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
        self.last_seq: dict[str, int] = {}  # per group: the last push's number (html_push)
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
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
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Ignore what the browser sends: nothing is commanded over this socket."""

    async def html_push(self, event: dict[str, Any]) -> None:
        """Forward a pushed fragment; first, if pushes of its group were missed, tell the
        page to resync (app.js fetches itself once and swaps its live elements by id).

        Each push carries its group's number (common.push.push_html). The first of a group
        on this socket sets the baseline: the page was just loaded, or resynced when the
        socket reopened. Later, a number more than one past the last means pushes went to
        nobody (published while Daphne's subscription to Redis was down, after a Redis
        restart); a lower one means the counter restarted with Redis, pushes between
        unknown. Two processes can publish in another order than they numbered (INCR, then
        PUBLISH): that reads as a gap, then a step back, and costs the page an extra resync
        or two, harmless (app.js runs one at a time)."""
        group, seq = event.get("group"), event.get("seq")
        if isinstance(group, str) and isinstance(seq, int):
            last = self.last_seq.get(group)
            if last is not None and (seq > last + 1 or seq < last):
                await self.send(text_data=resync_fragment(f"{group}:{last}->{seq}"))
            self.last_seq[group] = seq
        await self.send(text_data=event["html"])


def resync_fragment(gap: str) -> str:
    """Replaces base.html's hidden #ws-resync; app.js resyncs the page when it arrives."""
    return f'<div id="ws-resync" hidden hx-swap-oob="true" data-gap="{escape(gap)}"></div>'
