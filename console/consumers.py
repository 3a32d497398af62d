from __future__ import annotations

import re
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from console.push import CONSOLE_GROUP, TOPICS

# A domain page's topic (console.push.domain_group).
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

    async def html_push(self, event: dict[str, str]) -> None:
        await self.send(text_data=event["html"])
