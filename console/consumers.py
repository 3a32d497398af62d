from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from console.push import CONSOLE_GROUP


class ConsoleConsumer(AsyncWebsocketConsumer):
    """Joins the signed-in user to the console's groups and forwards pushed fragments.

    The socket is one-way: commands are htmx POSTs through views, services and the audit
    log, never websocket messages (STYLE.md B.7, B.10 rule 5).
    """

    async def connect(self) -> None:
        if not await self._may_view():
            await self.close()  # before accept: the handshake is refused with 403
            return
        self.joined = [CONSOLE_GROUP]
        for group in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

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
