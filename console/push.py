"""The only code that sends to the channel layer from sync code (STYLE.md B.7)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
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
    async_to_sync(get_channel_layer().group_send)(group, {"type": "html.push", "html": html})


def push_on_commit(group: str, render: Callable[[], str]) -> None:
    """Render after commit, so the fragment shows committed state; best effort, so a Redis
    outage can never turn a committed change into an error."""
    transaction.on_commit(lambda: push_html(group, render()), robust=True)


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
