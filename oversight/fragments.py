"""Pushable fragments of the oversight app: one template each, rendered the same way for
the page, an htmx response and a websocket push (STYLE.md B.7)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from django.template.loader import render_to_string

from oversight.models import Alert, CircuitBreaker, Halt, Interrupt

HALT_BANNER = "oversight/_halt_banner.html"
INTERRUPT_CARD = "oversight/_interrupt_card.html"
BREAKER_ROW = "oversight/_breaker_row.html"
ALERT = "oversight/_alert.html"
INBOX_ITEM = "oversight/_inbox_item.html"  # card + per-user controls, in #inbox-list
INBOX_CONTROLS = "oversight/_inbox_controls.html"  # deciders' form; pushed for all, CSS-gated
INBOX_OUTCOME = "oversight/_inbox_outcome.html"  # htmx answer once decided: no controls
INBOX_DECIDED = "oversight/_inbox_decided.html"  # pushed to #inbox-decided once decided
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def active_halts() -> list[Halt]:
    """Active halts, each with `in_flight`: its agent calls that have not answered yet."""
    from oversight.halt_selectors import halt_in_flight_count

    halts = list(
        Halt.objects.filter(lifted_at__isnull=True)
        .select_related("created_by", "lift_requested_by")
        .order_by("created_at")
    )
    for halt in halts:
        halt.in_flight = halt_in_flight_count(halt)  # type: ignore[attr-defined]
    return halts


def halt_banner() -> str:
    return render_to_string(HALT_BANNER, {"halts": active_halts(), "oob": True})


def interrupt_card(interrupt_id: int) -> str:
    interrupt = interrupts_with_history().get(pk=interrupt_id)
    return render_to_string(INTERRUPT_CARD, {"interrupt": interrupt, "oob": True})


# --- Approval inbox ------------------------------------------------------------------------


def interrupts_with_history(queryset: QuerySet[Interrupt] | None = None) -> QuerySet[Interrupt]:
    """What a card shows: the run, who decided or claims it, and the run's earlier
    decisions (its relevant history) as `interrupt.run.history`."""
    queryset = Interrupt.objects.all() if queryset is None else queryset
    return queryset.select_related("run", "decided_by", "claimed_by").prefetch_related(
        Prefetch("run__interrupts", queryset=_decided(), to_attr="history")
    )


def _decided() -> QuerySet[Interrupt]:
    return (
        Interrupt.objects.exclude(status=Interrupt.Status.PENDING)
        .select_related("decided_by")
        .order_by("-decided_at")
    )


def inbox_pending() -> list[Interrupt]:
    """Pending interrupts by deadline, then severity (critical first)."""
    pending = interrupts_with_history(Interrupt.objects.filter(status=Interrupt.Status.PENDING))
    return sorted(pending, key=lambda i: (i.deadline_at, _SEVERITY_RANK.get(i.severity, 9), i.pk))


def interrupt_update(interrupt_id: int) -> str:
    """Pushed when an interrupt is claimed, decided or expired: the card everywhere, and,
    once it is no longer pending, its item leaves every open inbox's list for its
    #inbox-decided (the decider's own page included: its form may be gone by the time the
    htmx answer lands, and htmx 2 drops the oob swaps of a detached element's answer)."""
    interrupt = interrupts_with_history().get(pk=interrupt_id)
    card = render_to_string(INTERRUPT_CARD, {"interrupt": interrupt, "oob": True})
    if interrupt.is_pending:
        return card
    gone = f'<div id="interrupt-{interrupt_id}" hx-swap-oob="delete"></div>'
    return gone + card + render_to_string(INBOX_DECIDED, {"interrupt": interrupt, "oob": True})


def interrupt_raised(interrupt: Interrupt) -> str:
    """Pushed when an interrupt is raised: prepended to every open inbox's #inbox-list, with
    controls that are the same for everyone (a push has no user): CSS shows them to those
    who may decide, and the decision view checks the permission.

    Rendered from the raising step's own objects, right after its commit, with one query
    for the run's earlier decisions: operators wait for this push (DESIGN.md section 6)."""
    interrupt.run.history = list(_decided().filter(run_id=interrupt.run_id))  # type: ignore[attr-defined]
    return render_to_string(INBOX_ITEM, {"interrupt": interrupt, "oob": True})


def breaker_row(breaker_id: int) -> str:
    breaker = CircuitBreaker.objects.select_related("agent", "blueprint", "domain").get(
        pk=breaker_id
    )
    return render_to_string(BREAKER_ROW, {"breaker": breaker, "oob": True})


def recent_alerts() -> list[Alert]:
    """What a page shows in its alerts section when it loads; pushes prepend newer ones."""
    return list(Alert.objects.filter(acknowledged_at__isnull=True)[:10])


def alert(alert: Alert) -> str:
    """The alert as pushed: no request, the same for every viewer."""
    return render_to_string(ALERT, {"alert": alert, "oob": True})


ALERT_GONE = "oversight/_alert_gone.html"


def alert_gone(alert_id: int, notice: str = "") -> str:
    """Pushed once an alert is acknowledged: it leaves every open feed. With a notice (the
    answer to someone who acknowledged too late) the notice takes the alert's place."""
    return render_to_string(ALERT_GONE, {"alert_id": alert_id, "notice": notice})
