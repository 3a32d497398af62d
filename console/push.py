"""The only code that sends to the channel layer from sync code (STYLE.md B.7)."""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

# Every signed-in console joins this group. Names: letters, digits, '.', '-', '_' only.
CONSOLE_GROUP = "console"


def push_html(group: str, html: str) -> None:
    """Send an HTML fragment to every websocket in the group; htmx swaps it by its id."""
    async_to_sync(get_channel_layer().group_send)(group, {"type": "html.push", "html": html})


def push_on_commit(group: str, render: Callable[[], str]) -> None:
    """Render after commit, so the fragment shows committed state; best effort, so a Redis
    outage can never turn a committed change into an error."""
    transaction.on_commit(lambda: push_html(group, render()), robust=True)
