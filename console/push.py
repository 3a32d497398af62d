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


def push_coalesced_on_commit(
    group: str, key: str, render: Callable[[], str], *, seconds: int = 1
) -> None:
    """push_on_commit, at most once per `seconds` per key (a Redis SET NX EX guard): a burst
    of changes sends one fragment, rendered after the first commit of the burst."""
    from console.liveness import redis_client

    def send() -> None:
        if redis_client().set(f"push-guard:{key}", 1, nx=True, ex=seconds):
            push_html(group, render())

    transaction.on_commit(send, robust=True)
