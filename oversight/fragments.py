"""Pushable fragments of the oversight app: one template each, rendered the same way for
the page, an htmx response and a websocket push (STYLE.md B.7). These functions only
render what they are given; the reads are oversight.selectors'."""

from __future__ import annotations

from django.template.loader import render_to_string

from oversight.models import Alert, CircuitBreaker, Halt, Interrupt

HALT_BANNER = "oversight/_halt_banner.html"
INTERRUPT_CARD = "oversight/_interrupt_card.html"
BREAKER_ROW = "oversight/_breaker_row.html"
ALERT = "oversight/_alert.html"
ALERT_GONE = "oversight/_alert_gone.html"
INBOX_ITEM = "oversight/_inbox_item.html"  # card + per-user controls, in #inbox-list
INBOX_CONTROLS = "oversight/_inbox_controls.html"  # deciders' form; pushed for all, CSS-gated
INBOX_OUTCOME = "oversight/_inbox_outcome.html"  # htmx answer once decided: no controls
INBOX_DECIDED = "oversight/_inbox_decided.html"  # pushed to #inbox-decided once decided
# The approve button's words, pushed with the card after each approval (issue 18).
APPROVE_LABEL = "oversight/_approve_label.html"


def halt_banner(halts: list[Halt]) -> str:
    """The banner of the active halts (selectors.active_halts), as pushed."""
    return render_to_string(HALT_BANNER, {"halts": halts, "oob": True})


def interrupt_card(interrupt: Interrupt) -> str:
    """The card of an interrupt read with its history (selectors.interrupt_get_with_history)."""
    return render_to_string(INTERRUPT_CARD, {"interrupt": interrupt, "oob": True})


def interrupt_update(interrupt: Interrupt) -> str:
    """Pushed when an interrupt is claimed, approved, decided or expired: the card everywhere
    (under a quorum, with the approve button's words, which say whether it decides), and,
    once it is no longer pending, its item leaves every open inbox's list for its
    #inbox-decided (the decider's own page included: its form may be gone by the time the
    htmx answer lands, and htmx 2 drops the oob swaps of a detached element's answer).
    The interrupt is read with its history (selectors.interrupt_get_with_history)."""
    if interrupt.is_pending and interrupt.needs_quorum:  # issue 18: an approval recorded
        label = render_to_string(APPROVE_LABEL, {"interrupt": interrupt, "oob": True})
        return interrupt_card(interrupt) + label
    if interrupt.is_pending:
        return interrupt_card(interrupt)
    # Settled: a pending card is always inside its item (an inbox's, a decision page's), which
    # leaves, so the card is sent once, as decided; replaced by id it would find no target.
    gone = f'<div id="interrupt-{interrupt.pk}" hx-swap-oob="delete"></div>'
    return gone + render_to_string(INBOX_DECIDED, {"interrupt": interrupt, "oob": True})


def interrupt_raised(interrupt: Interrupt) -> str:
    """Pushed when an interrupt is raised: prepended to every open inbox's #inbox-list, with
    controls that are the same for everyone (a push has no user): CSS shows them to those
    who may decide, and the decision view checks the permission.

    Rendered from the raising step's own objects, right after its commit, with its run's
    history (`run.history`, selectors.run_decisions, read in that step): operators wait for
    this push (DESIGN.md section 6)."""
    return render_to_string(INBOX_ITEM, {"interrupt": interrupt, "oob": True})


def breaker_row(breaker: CircuitBreaker) -> str:
    """A breaker's row (selectors.breaker_get_for_row), as pushed."""
    return render_to_string(BREAKER_ROW, {"breaker": breaker, "oob": True})


def alert(alert: Alert) -> str:
    """The alert as pushed: no request, the same for every viewer."""
    return render_to_string(ALERT, {"alert": alert, "oob": True})


def alert_gone(alert_id: int, notice: str = "") -> str:
    """Pushed once an alert is acknowledged: it leaves every open feed. With a notice (the
    answer to someone who acknowledged too late) the notice takes the alert's place."""
    return render_to_string(ALERT_GONE, {"alert_id": alert_id, "notice": notice})
