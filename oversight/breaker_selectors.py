"""Reads for the breakers and audit pages: a fixed number of queries however many rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import F, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from oversight.models import AuditEvent, CircuitBreaker

TRIP_VERBS = (
    "breaker.opened",
    "breaker.half_opened",
    "breaker.closed",
    "breaker.reset",
    "breaker.forced_open",
)
HISTORY_LIMIT = 10


@dataclass
class BreakerItem:
    breaker: CircuitBreaker
    history: list[AuditEvent] = field(default_factory=list)
    reset_form: Any = None
    force_form: Any = None


def _history(breaker_ids: list[int]) -> dict[str, list[AuditEvent]]:
    """The last HISTORY_LIMIT trip events of each breaker, in one query."""
    if not breaker_ids:
        return {}
    rows = (
        AuditEvent.objects.filter(
            target_type="breaker", target_id__in=[str(i) for i in breaker_ids], verb__in=TRIP_VERBS
        )
        .annotate(
            rn=Window(
                RowNumber(), partition_by=F("target_id"), order_by=[F("at").desc(), F("id").desc()]
            )
        )
        .filter(rn__lte=HISTORY_LIMIT)
        .order_by("-at", "-id")
    )
    grouped: dict[str, list[AuditEvent]] = {}
    for row in rows:
        grouped.setdefault(row.target_id, []).append(row)
    return grouped


def breaker_list_with_history() -> list[BreakerItem]:
    """Every breaker with what it guards and its recent trip history (two queries)."""
    breakers = list(CircuitBreaker.objects.select_related("agent__domain", "blueprint", "domain"))
    history = _history([b.pk for b in breakers])
    return [BreakerItem(b, history.get(str(b.pk), [])) for b in breakers]


def breaker_get_with_history(breaker_id: int) -> BreakerItem:
    breaker = CircuitBreaker.objects.select_related("agent__domain", "blueprint", "domain").get(
        pk=breaker_id
    )
    return BreakerItem(breaker, _history([breaker.pk]).get(str(breaker.pk), []))


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def audit_filter(
    *,
    actor: str = "",
    verb: str = "",
    target_type: str = "",
    target_id: str = "",
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    """Audit rows newest first; verb may be a prefix ending in "." (halt.); until is inclusive."""
    rows = AuditEvent.objects.order_by("-at", "-id")
    if actor:
        rows = rows.filter(actor_name=actor)
    if verb:
        rows = rows.filter(verb__startswith=verb) if verb.endswith(".") else rows.filter(verb=verb)
    if target_type:
        rows = rows.filter(target_type=target_type)
    if target_id:
        rows = rows.filter(target_id=target_id)
    if since:
        rows = rows.filter(at__gte=_day_start(since))
    if until:
        rows = rows.filter(at__lt=_day_start(until + timedelta(days=1)))
    return rows
