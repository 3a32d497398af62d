from __future__ import annotations

from celery import shared_task
from django.core.management import call_command

from console import fragments
from oversight.selectors import domain_cards, overview_totals


@shared_task
def sessions_clear() -> None:
    """Delete expired login sessions (Django's clearsessions); scheduled daily by beat."""
    call_command("clearsessions")


@shared_task(ignore_result=True)
def push_fragment(group: str, render: str, *args) -> None:
    """The trailing push of a coalesced burst (common.push): render now, send."""
    from django.core.exceptions import ObjectDoesNotExist
    from django.utils.module_loading import import_string

    from common.push import push_html

    try:
        html = import_string(render)(*args)
    except ObjectDoesNotExist:
        return  # deleted since the push was asked for: no page can be showing it any more
    push_html(group, html)


def overview_html() -> str:
    """The overview as pushed (common.push.overview_push names it: rendered on commit, or
    here by push_fragment): every domain's card and the totals, from one read of the cards
    so that they agree; the same handful of aggregate queries however much data there is."""
    cards = domain_cards()
    return fragments.overview(cards, overview_totals(cards))
