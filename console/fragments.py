"""Pushable fragments of the console app: one template each, rendered the same way for the
page, an htmx response and a websocket push (STYLE.md B.7)."""

from __future__ import annotations

import redis
from django.template.loader import render_to_string

from console import liveness

WORKERS = "console/_workers.html"
DOMAIN_CARD = "console/_domain_card.html"


def worker_count_or_none() -> int | None:
    """The live worker count, or None when Redis does not answer (shown as unknown)."""
    try:
        return liveness.worker_count()
    except redis.RedisError:
        return None


def workers() -> str:
    return render_to_string(WORKERS, {"workers": worker_count_or_none(), "oob": True})


def domain_cards(slugs: list[str] | None = None) -> str:
    """The named domains' overview cards (all when None), as pushed: no request."""
    from oversight.overview import domain_cards as cards

    return "".join(
        render_to_string(DOMAIN_CARD, {"card": card, "oob": True}) for card in cards(slugs)
    )
