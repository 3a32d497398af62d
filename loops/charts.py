"""Plotly figure builders: each returns an HTML fragment (STYLE.md B.7), a <div> carrying
the figure as JSON in its data-figure attribute. static/console/app.js draws every such div
with plotly.js when the page loads and whenever htmx or a websocket push swaps one in, so a
figure needs no inline script, and the strict Content Security Policy (settings.SECURE_CSP)
holds on full pages, htmx responses and pushes alike."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import cache
from typing import Any, TypedDict

import plotly.graph_objects as go
import plotly.io as pio
from django.db import connection, transaction
from django.db.models import Aggregate, Count, F, FloatField, Func, Max, Q, Sum
from django.db.models.functions import TruncMinute
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from loops.models import Contribution, DomainMinute, Iteration, LoopRun

STACK_CAP = 300

STATE_COLOURS = {
    "pending": "#9ca3af",
    "running": "#2563eb",
    "waiting": "#a855f7",
    "interrupted": "#f59e0b",
    "paused": "#64748b",
    "halted": "#dc2626",
    "succeeded": "#16a34a",
    "exhausted": "#ca8a04",
    "failed": "#b91c1c",
    "cancelled": "#6b7280",
}


CONFIG = {"displaylogo": False, "responsive": True}


@cache
def _template() -> dict[str, Any]:
    """plotly's default template as JSON, built once. Every go.Figure validated and deep-copied
    it, and the figure again to serialise it: 8 ms a chart, more than the page's queries
    (bench.pages), so the figures below are the plain dicts plotly.js reads."""
    return json.loads(pio.to_json(go.Figure(), validate=False))["layout"]["template"]


def _isoformat(value: datetime) -> str:
    """Times as plotly writes them (the minutes of the charts, their windows)."""
    return value.isoformat()


def _html(
    traces: list[dict[str, Any]],
    layout: dict[str, Any],
    div_id: str,
    *,
    open_on_click: bool = False,
) -> SafeString:
    """The figure as a div for app.js to draw: {"data", "layout", "config"} as JSON, escaped
    for the attribute. open_on_click: a click on a point opens the URL in its customdata."""
    figure = {"data": traces, "layout": {"template": _template(), **layout}, "config": CONFIG}
    return format_html(
        '<div class="plotly-figure" id="{}" data-figure="{}"{}></div>',
        div_id,
        json.dumps(figure, separators=(",", ":"), default=_isoformat),
        SafeString(" data-open-on-click") if open_on_click else "",
    )


def stack_frames(domain_id: int, *, cap: int = STACK_CAP) -> list[LoopRun]:
    """The frames of the domain's live stacks: every run under a live root (one query)."""
    return list(
        LoopRun.objects.filter(domain_id=domain_id, root__state__in=LoopRun.LIVE)
        .select_related("blueprint")
        .only("id", "parent_id", "root_id", "depth", "state", "blueprint__name")
        .order_by("depth", "id")[:cap]
    )


def stack_icicle(slug: str, frames: list[LoopRun]) -> str:
    """The live stack as an icicle: one sector per frame, coloured by its state; a click
    opens the frame (static/console/app.js)."""
    ids = {f.pk for f in frames}
    url = reverse("loops:run", args=[0]).replace("/0/", "/{}/")  # one reverse, not 300
    icicle = {
        "type": "icicle",
        "ids": [str(f.pk) for f in frames],
        "parents": [str(f.parent_id) if f.parent_id in ids else "" for f in frames],
        "labels": [f"{f.blueprint.name} #{f.pk} · {f.state}" for f in frames],
        "customdata": [url.format(f.pk) for f in frames],
        "marker": {"colors": [STATE_COLOURS.get(f.state, "#999") for f in frames]},
        "hovertemplate": "%{label}<extra></extra>",
        "tiling": {"orientation": "v"},
    }
    layout = {"margin": {"t": 10, "l": 10, "r": 10, "b": 10}, "height": 360}
    return _html([icicle], layout, f"domain-{slug}-icicle", open_on_click=True)


# --- The domain's activity over the last hour: four charts from one rollup query ---------


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


# The charts read a per-minute rollup (DomainMinute), not the iterations and calls: those
# grow with the domain's activity (20,000 iterations an hour in bench.seed, ten to forty times
# more at the product's target), the rollup does not (at most 60 rows a domain an hour).
# The beat sweeps every few seconds (loops.tasks.domain_minutes_sweep), so the current minute,
# still filling, shows as it was at most that long ago.

WINDOW_MINUTES = 60
ROLLUP_KEEP = timedelta(days=1)
# pg_try_advisory_xact_lock's key: one sweep at a time; a second, racing, skips its turn.
SWEEP_LOCK = 0x6C6F6F70_6D696E75  # "loopminu"


def _minute(value: datetime) -> datetime:
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
    current = _minute(now)
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
        start = _minute(since)
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


def activity_minutes(
    domain_id: int, since: datetime, *, minutes: int = WINDOW_MINUTES
) -> tuple[list[IterationMinute], list[CallMinute]]:
    """The domain's rolled-up minutes from since on, an hour of them at most (one query):
    those in which iterations closed, and those in which calls finished."""
    until = since + timedelta(minutes=minutes)  # minutes a clock ahead wrote stay out
    rows = list(
        DomainMinute.objects.filter(domain_id=domain_id, minute__gte=since, minute__lt=until)
        .order_by("minute")
        .values_list("minute", "closed", "p50", "p95", "calls", "failed", "cost")
    )
    iterations = [
        IterationMinute(minute=minute, closed=closed, p50=p50, p95=p95)
        for minute, closed, p50, p95, *_ in rows
        if closed
    ]
    calls = [
        CallMinute(minute=minute, calls=n, failed=failed, cost=amount)
        for minute, _, _, _, n, failed, amount in rows
        if n
    ]
    return iterations, calls


def domain_activity(domain_id: int, *, minutes: int = WINDOW_MINUTES) -> dict[str, str]:
    """Throughput, latency, error rate and cost per minute over the last hour, as four
    figures (one query of the rollup, however many iterations and calls there were)."""
    now = timezone.now()
    window = [now - timedelta(minutes=minutes), now]
    since = _minute(now) - timedelta(minutes=minutes - 1)  # the current minute is the last
    iterations, calls = activity_minutes(domain_id, since, minutes=minutes)
    return {
        "throughput": throughput(domain_id, iterations, window),
        "latency": latency(domain_id, iterations, window),
        "errors": error_rate(domain_id, calls, window),
        "cost": cost(domain_id, calls, window),
    }


def _minute_layout(window: list[datetime], title: str, **y: Any) -> dict[str, Any]:
    return {
        "margin": {"t": 10, "l": 50, "r": 10, "b": 30},
        "height": 220,
        "yaxis": {"rangemode": "tozero", "title": {"text": title}, **y},
        "xaxis": {"range": window},
        "legend": {"orientation": "h", "y": 1.1},
    }


def throughput(domain_id: int, rows: list[IterationMinute], window: list[datetime]) -> str:
    """Iterations closed per minute."""
    bar = {
        "type": "bar",
        "x": [r["minute"] for r in rows],
        "y": [r["closed"] for r in rows],
        "marker": {"color": "#2563eb"},
    }
    layout = _minute_layout(window, "iterations / min")
    return _html([bar], layout, f"domain-{domain_id}-throughput")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def latency(domain_id: int, rows: list[IterationMinute], window: list[datetime]) -> str:
    """How long an iteration took, from its broadcast to its close: median and p95."""
    xs = [r["minute"] for r in rows]
    series = (
        ("median", [r["p50"] for r in rows], "#2563eb"),
        ("p95", [r["p95"] for r in rows], "#f59e0b"),
    )
    lines = [
        {
            "type": "scatter",
            "x": xs,
            "y": [_round(v) for v in values],
            "name": name,
            "mode": "lines+markers",
            "line": {"color": colour},
            "hovertemplate": f"{name} %{{y}} s<extra></extra>",
        }
        for name, values, colour in series
    ]
    return _html(lines, _minute_layout(window, "iteration seconds"), f"domain-{domain_id}-latency")


def error_rate(domain_id: int, rows: list[CallMinute], window: list[datetime]) -> str:
    """The share of finished agent calls that failed, per minute."""
    bar = {
        "type": "bar",
        "x": [r["minute"] for r in rows],
        "y": [round(r["failed"] / r["calls"], 4) for r in rows],
        "customdata": [[r["failed"], r["calls"]] for r in rows],
        "hovertemplate": "%{customdata[0]} of %{customdata[1]} calls failed<extra></extra>",
        "marker": {"color": "#b91c1c"},
    }
    layout = _minute_layout(window, "failed calls", tickformat=".0%")
    return _html([bar], layout, f"domain-{domain_id}-errors")


def cost(domain_id: int, rows: list[CallMinute], window: list[datetime]) -> str:
    """What the domain's agent calls cost, summed per minute."""
    bar = {
        "type": "bar",
        "x": [r["minute"] for r in rows],
        "y": [_round(r["cost"], 6) for r in rows],
        "marker": {"color": "#16a34a"},
    }
    return _html([bar], _minute_layout(window, "cost / min"), f"domain-{domain_id}-cost")
