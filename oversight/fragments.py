"""Pushable fragments of the oversight app: one template each, rendered the same way for
the page, an htmx response and a websocket push (STYLE.md B.7)."""

from __future__ import annotations

from django.template.loader import render_to_string

from oversight.models import Alert, CircuitBreaker, Halt, Interrupt

HALT_BANNER = "oversight/_halt_banner.html"
INTERRUPT_CARD = "oversight/_interrupt_card.html"
BREAKER_ROW = "oversight/_breaker_row.html"
ALERT = "oversight/_alert.html"


def active_halts() -> list[Halt]:
    return list(Halt.objects.filter(lifted_at__isnull=True).order_by("created_at"))


def halt_banner() -> str:
    return render_to_string(HALT_BANNER, {"halts": active_halts(), "oob": True})


def interrupt_card(interrupt_id: int) -> str:
    interrupt = Interrupt.objects.select_related("run", "decided_by", "claimed_by").get(
        pk=interrupt_id
    )
    return render_to_string(INTERRUPT_CARD, {"interrupt": interrupt, "oob": True})


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
