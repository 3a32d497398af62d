"""Plotly figure builders: each returns an HTML fragment (STYLE.md B.7). plotly.js itself is
loaded once, deferred, by base.html; the inline script of a figure therefore waits for
DOMContentLoaded when it runs before plotly.js (a full page), and runs at once when htmx or
a websocket push swaps it in later."""

from __future__ import annotations

import re
from datetime import timedelta

import plotly.graph_objects as go
import plotly.io as pio
from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.urls import reverse
from django.utils import timezone

from loops.models import Iteration, LoopRun

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


def _html(fig: go.Figure, div_id: str, post_script: str | None = None) -> str:
    html = pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        post_script=post_script,
        config={"displaylogo": False, "responsive": True},
    )
    # Defer the inline newPlot call until plotly.js (a deferred script) has run. plotly.py
    # writes "<script>" or '<script type="text/javascript">' depending on its version.
    found = re.search(r"<script[^>]*>", html)
    if found is None:
        raise ValueError("plotly.io.to_html wrote no script")
    opening = found.group(0)
    head, rest = html[: found.start()], html[found.end() :]
    body, _, tail = rest.rpartition("</script>")
    wrapped = (
        "(function(run){if(window.Plotly){run();}else{"
        'document.addEventListener("DOMContentLoaded",run);}})(function(){' + body + "});"
    )
    return head + opening + wrapped + "</script>" + tail


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
    opens the frame (static/console/app.js, consoleBindStack)."""
    ids = {f.pk for f in frames}
    fig = go.Figure(
        go.Icicle(
            ids=[str(f.pk) for f in frames],
            parents=[str(f.parent_id) if f.parent_id in ids else "" for f in frames],
            labels=[f"{f.blueprint.name} #{f.pk} · {f.state}" for f in frames],
            customdata=[reverse("loops:run", args=[f.pk]) for f in frames],
            marker={"colors": [STATE_COLOURS.get(f.state, "#999") for f in frames]},
            hovertemplate="%{label}<extra></extra>",
            tiling={"orientation": "v"},
        )
    )
    fig.update_layout(margin={"t": 10, "l": 10, "r": 10, "b": 10}, height=360)
    return _html(
        fig,
        f"domain-{slug}-icicle",
        post_script="window.consoleBindStack && window.consoleBindStack('{plot_id}');",
    )


def throughput(domain_id: int, *, minutes: int = 60) -> str:
    """Iterations closed per minute over the last hour (one aggregated query)."""
    since = timezone.now() - timedelta(minutes=minutes)
    rows = (
        Iteration.objects.filter(run__domain_id=domain_id, closed_at__gte=since)
        .annotate(minute=TruncMinute("closed_at"))
        .order_by("minute")
        .values("minute")
        .annotate(n=Count("id"))
    )
    xs = [row["minute"] for row in rows]
    ys = [row["n"] for row in rows]
    fig = go.Figure(go.Bar(x=xs, y=ys, marker={"color": "#2563eb"}))
    fig.update_layout(
        margin={"t": 10, "l": 40, "r": 10, "b": 30},
        height=220,
        yaxis={"title": "iterations / min"},
        xaxis={"range": [since, timezone.now()]},
    )
    return _html(fig, f"domain-{domain_id}-throughput")
