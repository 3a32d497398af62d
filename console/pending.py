"""The header's pending decisions (issue 17): how many wait, the one whose deadline comes
first, and the newest critical one (which notify.js raises a desktop notification for), on
every page. Read in one query; pushed to every console riding the overview's push
(common.push.overview_push), and sent only when it changed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Subquery, Window
from django.urls import NoReverseMatch, reverse

from common import redis as shared_redis
from console import fragments
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


LAST_PUSHED = "push-last:pending-decisions"
LAST_PUSHED_SECONDS = 3600


def pending_html() -> str:
    """The fragment as pushed (common.push.overview_push names it), or "" when it is what
    was pushed last: the overview's push also follows every frame of a busy stack, and the
    header must not go to every console each time. A page loaded since renders it itself."""
    html = fragments.pending(pending_decisions())
    digest = hashlib.blake2b(html.encode(), digest_size=16).hexdigest()
    client = shared_redis.redis_client()
    last = client.set(LAST_PUSHED, digest, ex=LAST_PUSHED_SECONDS, get=True)
    return "" if last == digest.encode() else html
