"""Pushable fragments of the console app: one template each, rendered the same way for the
page, an htmx response and a websocket push (STYLE.md B.7). These functions only render what
they are given; the reads are the apps' selectors."""

from __future__ import annotations

from django.template.loader import render_to_string

from oversight.selectors import DomainCard
from oversight.urgent import Pending

WORKERS = "console/_workers.html"
DOMAIN_CARD = "console/_domain_card.html"
OVERVIEW_STATUS = "console/_overview_status.html"
PENDING = "console/_pending.html"  # the header's pending decisions, on every page


def workers(count: int | None) -> str:
    """The live worker count (None: unknown, Redis did not answer), as pushed."""
    return render_to_string(WORKERS, {"workers": count, "oob": True})


def overview(cards: list[DomainCard], totals: dict[str, int]) -> str:
    """Every domain's overview card and the global status bar, as pushed: no request. One
    render for all domains keeps the totals consistent with the cards."""
    return render_to_string(OVERVIEW_STATUS, {"totals": totals, "oob": True}) + "".join(
        render_to_string(DOMAIN_CARD, {"card": card, "oob": True}) for card in cards
    )


def pending(pending: Pending) -> str:
    """The header's pending decisions (oversight.urgent.pending_decisions), as pushed."""
    return render_to_string(PENDING, {"pending": pending, "oob": True})
