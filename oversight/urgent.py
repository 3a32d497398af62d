"""The pending decisions every page's header shows (console/_pending.html, issue 17): how
many wait, the one whose deadline comes first (one click away on every page), and the newest
critical one, which notify.js raises a desktop notification for. Read in one query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Subquery, Window
from django.urls import NoReverseMatch, reverse

from oversight.models import Interrupt


@dataclass(frozen=True)
class Pending:
    count: int = 0
    soonest_id: int | None = None
    soonest_reason: str = ""
    soonest_severity: str = ""
    soonest_deadline: datetime | None = None
    critical_id: int | None = None  # the newest pending critical one
    critical_reason: str = ""

    @property
    def soonest_url(self) -> str:
        return decision_url(self.soonest_id) if self.soonest_id else ""

    @property
    def critical_url(self) -> str:
        return decision_url(self.critical_id) if self.critical_id else ""


def decision_url(interrupt_id: int) -> str:
    """The decision's own page once it exists (oversight:interrupt-detail), else its item in
    the inbox."""
    try:
        return reverse("oversight:interrupt-detail", args=[interrupt_id])
    except NoReverseMatch:
        return f"{reverse('oversight:inbox')}#interrupt-{interrupt_id}"


def pending_decisions() -> Pending:
    """One query however many wait: the soonest pending row, with the count over all of them
    (a window) and the newest critical one (a subquery)."""
    pending = Interrupt.objects.filter(status=Interrupt.Status.PENDING)
    critical = pending.filter(severity=Interrupt.Severity.CRITICAL).order_by("-created_at", "-id")
    row = (
        pending.annotate(
            total=Window(Count("id")),
            critical_id=Subquery(critical.values("id")[:1]),
            critical_reason=Subquery(critical.values("reason")[:1]),
        )
        .order_by("deadline_at", "id")
        .values(
            "id", "reason", "severity", "deadline_at", "total", "critical_id", "critical_reason"
        )
        .first()
    )
    if row is None:
        return Pending()
    return Pending(
        count=row["total"],
        soonest_id=row["id"],
        soonest_reason=row["reason"],
        soonest_severity=row["severity"],
        soonest_deadline=row["deadline_at"],
        critical_id=row["critical_id"],
        critical_reason=row["critical_reason"] or "",
    )
