"""The domain page's activity, rolled up per minute (issue 8): the charts read DomainMinute,
not the iterations and calls, whose number grows with the domain's activity (20,000
iterations an hour in bench.seed, ten to forty times more at the product's target); the
rollup does not (at most 60 rows a domain an hour). The beat sweeps every few seconds
(loops.tasks.domain_minutes_sweep), so the current minute, still filling, shows as it was at
most that long ago."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypedDict

from django.db import connection, transaction
from django.db.models import Aggregate, Count, F, FloatField, Func, Max, Q, Sum
from django.db.models.functions import TruncMinute
from django.utils import timezone

from loops.models import Contribution, DomainMinute, Iteration


class Percentile(Aggregate):
    """PostgreSQL's interpolated percentile, computed in the database per group."""

    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)%(filter)s"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"a percentile is between 0 and 1, not {fraction!r}")
        super().__init__(expression, fraction=float(fraction), **extra)


def _seconds(start: str, end: str) -> Func:
    return Func(
        F(end) - F(start),
        template="EXTRACT(EPOCH FROM %(expressions)s)::double precision",
        output_field=FloatField(),
    )


class IterationMinute(TypedDict):
    minute: datetime
    closed: int
    p50: float | None  # seconds; None when every iteration of the minute was abandoned
    p95: float | None


class CallMinute(TypedDict):
    minute: datetime
    calls: int
    failed: int
    cost: float


WINDOW_MINUTES = 60
ROLLUP_KEEP = timedelta(days=1)
# pg_try_advisory_xact_lock's key: one sweep at a time; a second, racing, skips its turn.
SWEEP_LOCK = 0x6C6F6F70_6D696E75  # "loopminu"


def minute_of(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _iterations_by_minute(since: datetime) -> Any:
    """Per domain and minute (by closed_at) from since on: iterations closed, and the median
    and 95th percentile of how long they took, in seconds. Abandoned iterations (their run
    was cancelled or ran out of time while they were open) count as closed but not towards
    the latency: their duration says when the run ended, not how long an iteration takes."""
    timed = ~Q(outcome=Iteration.Outcome.ABANDONED)
    duration = _seconds("started_at", "closed_at")
    return (
        Iteration.objects.filter(closed_at__gte=since)
        .annotate(minute=TruncMinute("closed_at"))
        .order_by()
        .values("minute", domain=F("run__domain_id"))
        .annotate(
            closed=Count("id"),
            p50=Percentile(duration, 0.5, filter=timed),
            p95=Percentile(duration, 0.95, filter=timed),
        )
    )


def _calls_by_minute(since: datetime) -> Any:
    """Per domain and minute (by finished_at) from since on: agent calls (contributions)
    finished, those that failed, and what they cost together."""
    done = [Contribution.Status.COMPLETED, Contribution.Status.FAILED]
    return (
        Contribution.objects.filter(finished_at__gte=since, status__in=done)
        .annotate(minute=TruncMinute("finished_at"))
        .order_by()
        .values("minute", domain=F("iteration__run__domain_id"))
        .annotate(
            calls=Count("id"),
            failed=Count("id", filter=Q(status=Contribution.Status.FAILED)),
            cost=Sum("cost"),
        )
    )


def domain_minutes_sweep(*, since: datetime | None = None) -> int:
    """Recompute the rollup of every domain for each minute from since's on, whole, from the
    iterations and calls, and return how many (domain, minute) rows it wrote.

    By default since is the last minute already rolled up, or the previous minute if that is
    later (an iteration committed just after its minute ended still lands in it), and never
    more than the charts' hour back: a beat that stopped for a while fills its gap. Each row
    is recomputed from its source rows and upserted (ON CONFLICT DO UPDATE), so a pass run
    again writes the same rows: nothing is ever added to a count. Passes take an advisory
    lock and one finding it held does nothing, so that an older snapshot never overwrites a
    newer one. Rows for a minute whose source rows are gone are deleted, and rows older than
    ROLLUP_KEEP too."""
    now = timezone.now()
    current = minute_of(now)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SWEEP_LOCK])
            (locked,) = cursor.fetchone()
        if not locked:
            return 0
        oldest = current - timedelta(minutes=WINDOW_MINUTES)
        if since is None:
            latest = DomainMinute.objects.aggregate(latest=Max("minute"))["latest"]
            previous = current - timedelta(minutes=1)
            since = oldest if latest is None else max(oldest, min(latest, previous))
        start = minute_of(since)
        rows: dict[tuple[int, datetime], DomainMinute] = {}
        for r in _iterations_by_minute(start):
            rows[r["domain"], r["minute"]] = DomainMinute(
                domain_id=r["domain"],
                minute=r["minute"],
                closed=r["closed"],
                p50=r["p50"],
                p95=r["p95"],
                swept_at=now,
            )
        for r in _calls_by_minute(start):
            key = (r["domain"], r["minute"])
            row = rows.setdefault(
                key, DomainMinute(domain_id=r["domain"], minute=r["minute"], swept_at=now)
            )
            row.calls, row.failed, row.cost = r["calls"], r["failed"], r["cost"] or 0.0
        written = DomainMinute.objects.bulk_create(
            rows.values(),
            update_conflicts=True,
            unique_fields=["domain", "minute"],
            update_fields=["closed", "p50", "p95", "calls", "failed", "cost", "swept_at"],
        )
        DomainMinute.objects.filter(minute__gte=start).exclude(
            pk__in=[row.pk for row in written]
        ).delete()
        DomainMinute.objects.filter(minute__lt=current - ROLLUP_KEEP).delete()
    return len(written)
