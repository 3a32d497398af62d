"""Pushable fragments of the console app: one template each, rendered the same way for the
page, an htmx response and a websocket push (STYLE.md B.7)."""

from __future__ import annotations

import redis
from django.template.loader import render_to_string

from console import liveness

WORKERS = "console/_workers.html"
DOMAIN_CARD = "console/_domain_card.html"
OVERVIEW_STATUS = "console/_overview_status.html"


def worker_count_or_none() -> int | None:
    """The live worker count, or None when Redis does not answer (shown as unknown)."""
    try:
        return liveness.worker_count()
    except redis.RedisError:
        return None


def workers() -> str:
    return render_to_string(WORKERS, {"workers": worker_count_or_none(), "oob": True})


def overview() -> str:
    """Every domain's overview card and the global status bar, as pushed: no request. One
    render for all domains keeps the totals consistent with the cards; it costs the same
    handful of aggregate queries however much data there is (oversight.overview)."""
    from oversight.overview import domain_cards, overview_totals

    cards = domain_cards()
    return render_to_string(
        OVERVIEW_STATUS, {"totals": overview_totals(cards), "oob": True}
    ) + "".join(render_to_string(DOMAIN_CARD, {"card": card, "oob": True}) for card in cards)


def overview_push(*, at_once: bool = False) -> None:
    """Push the overview after commit. Ordinary changes (frames starting and ending,
    interrupts, breakers) are coalesced to one push a window (console.push.COALESCE_SECONDS),
    the latest state last; a halt or a lift is pushed at once (rendered by a worker),
    whatever was pushed just before."""
    from console.push import OVERVIEW_GROUP, push_coalesced_on_commit, push_soon_on_commit

    if at_once:
        push_soon_on_commit(OVERVIEW_GROUP, "console.fragments.overview")
    else:
        push_coalesced_on_commit(OVERVIEW_GROUP, "overview", "console.fragments.overview")
