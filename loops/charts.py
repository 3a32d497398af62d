"""Plotly figure builders: each returns an HTML fragment (STYLE.md B.7), a <div> carrying
the figure as JSON in its data-figure attribute. static/console/app.js draws every such div
with plotly.js when the page loads and whenever htmx or a websocket push swaps one in, so a
figure needs no inline script, and the strict Content Security Policy (settings.SECURE_CSP)
holds on full pages, htmx responses and pushes alike."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import plotly.graph_objects as go
import plotly.io as pio
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

from loops.models import LoopRun
from loops.remotes import remote_state
from loops.rollup import WINDOW_MINUTES, CallMinute, IterationMinute, minute_of
from loops.selectors import activity_minutes

# Okabe-Ito's colour-blind-safe hues, each state's own, and the text drawn on it: black or
# white, whichever has 4.5:1 or more against the sector (the label also names the state).
STATE_COLOURS = {
    "pending": "#56b4e9",
    "running": "#0072b2",
    "waiting": "#cc79a7",
    "interrupted": "#e69f00",
    "paused": "#6b6b6b",
    "halted": "#d55e00",
    "succeeded": "#009e73",
    "exhausted": "#f0e442",
    "failed": "#882255",
    "cancelled": "#a3a3a3",
}
WHITE_TEXT = {"running", "paused", "failed"}
# Lines and text that read on the light and the dark theme alike (plotly.css sets the axes'
# text and the grid from the page's tokens; these are what shows before it applies).
INK = "#6b7280"
GRID = "rgba(128, 128, 128, 0.3)"
# Transparent: the figure shows the page's own surface, light or dark.
THEME = {
    "paper_bgcolor": "rgba(0,0,0,0)",
    "plot_bgcolor": "rgba(0,0,0,0)",
    "font": {"family": "system-ui, sans-serif", "size": 13, "color": INK},
    "hoverlabel": {"font": {"size": 14}},
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
    remote_ids: str = "",
) -> SafeString:
    """The figure as a div for app.js to draw: {"data", "layout", "config"} as JSON, escaped
    for the attribute. open_on_click: a click on a point opens the URL in its customdata;
    remote_ids: the points whose click shows their remote view instead."""
    figure = {
        "data": traces,
        "layout": {"template": _template(), **THEME, **layout},
        "config": CONFIG,
    }
    return format_html(
        '<div class="plotly-figure" id="{}" data-figure="{}"{}{}></div>',
        div_id,
        json.dumps(figure, separators=(",", ":"), default=_isoformat),
        SafeString(" data-open-on-click") if open_on_click else "",
        format_html(' data-remote-ids="{}"', remote_ids) if remote_ids else "",
    )


def stack_icicle(slug: str, frames: list[LoopRun]) -> str:
    """The live stack as an icicle: one sector per frame, coloured by its state; a click
    opens the frame (static/console/app.js), and a click on a remote frame shows, under
    the chart, what its peer's grant lets this realm see (data-remote-ids)."""
    ids = {f.pk for f in frames}
    url = reverse("loops:run", args=[0]).replace("/0/", "/{}/")  # one reverse, not 300
    labels = [frame_label(f) for f in frames]
    callers = {f.parent_id for f in frames}
    ink = ["#ffffff" if f.state in WHITE_TEXT else "#000000" for f in frames]
    font = {"size": 14, "color": ink}
    icicle = {
        "type": "icicle",
        "ids": [str(f.pk) for f in frames],
        "parents": [str(f.parent_id) if f.parent_id in ids else "" for f in frames],
        "labels": labels,
        # A frame with children is tall: its label on two lines fits a narrow screen too.
        "text": [
            label.replace(" #", "<br>#", 1) if f.pk in callers else label
            for f, label in zip(frames, labels, strict=True)
        ],
        "textinfo": "text",
        # plotly dims the text of a sector with children unless its font is set outright.
        "textfont": font,
        "insidetextfont": font,
        # The whole address on hover or focus, however small the sector.
        "hovertext": [_frame_details(f, label) for f, label in zip(frames, labels, strict=True)],
        "hovertemplate": "%{hovertext}<extra></extra>",
        "customdata": [url.format(f.pk) for f in frames],
        "marker": {
            "colors": [STATE_COLOURS.get(f.state, "#a3a3a3") for f in frames],
            "line": {"color": GRID, "width": 1},
        },
        "leaf": {"opacity": 1},  # plotly's 0.7 would blend each sector with the theme
        # Depth left to right, siblings stacked: each frame's label gets its column's whole
        # width on one line, and the figure grows with the frames (up to a point).
        "tiling": {"orientation": "h"},
        "pathbar": {"visible": False},
    }
    leaves = len(ids - callers)
    # Labels never shrink below 12 px: a sector too small for one shows it on hover.
    layout = {
        "margin": {"t": 4, "l": 4, "r": 4, "b": 4},
        "height": min(900, max(360, 22 * leaves)),
        "uniformtext": {"minsize": 12, "mode": "hide"},
    }
    remote = ",".join(str(f.pk) for f in frames if getattr(f, "remote_realm", None) is not None)
    return _html([icicle], layout, f"domain-{slug}-icicle", open_on_click=True, remote_ids=remote)


def _frame_details(frame: LoopRun, label: str) -> str:
    kind = "main loop" if frame.depth == 0 else f"depth {frame.depth}"
    return f"{label}<br>{kind} · click to open"  # no <b>: plotly would set a style=""


def frame_label(frame: LoopRun) -> str:
    """'<blueprint> #<id> · <state>'; a remote frame (selectors.stack_frames) as
    '<realm>: <its blueprint there> #<id> · <state>' (DESIGN.md section 8)."""
    realm = getattr(frame, "remote_realm", None)
    if realm is None:
        return f"{frame.blueprint.name} #{frame.pk} · {frame.state}"
    state = remote_state(
        frame.state,
        frame.remote_state,  # type: ignore[attr-defined]
        frame.remote_substate,  # type: ignore[attr-defined]
        frame.remote_run_state,  # type: ignore[attr-defined]
        getattr(frame, "unreachable", False),
    )
    return f"{realm}: {frame.remote_blueprint} #{frame.pk} · {state}"  # type: ignore[attr-defined]


# --- The domain's activity over the last hour: four charts from one rollup query ---------


def domain_activity(domain_id: int, *, minutes: int = WINDOW_MINUTES) -> dict[str, str]:
    """Throughput, latency, error rate and cost per minute over the last hour, as four
    figures (one query of the rollup, however many iterations and calls there were)."""
    now = timezone.now()
    window = [now - timedelta(minutes=minutes), now]
    since = minute_of(now) - timedelta(minutes=minutes - 1)  # the current minute is the last
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
        "yaxis": {"rangemode": "tozero", "title": {"text": title}, "gridcolor": GRID, **y},
        "xaxis": {"type": "date", "range": window, "gridcolor": GRID},
        "legend": {"orientation": "h", "y": 1.1},
    }


def throughput(domain_id: int, rows: list[IterationMinute], window: list[datetime]) -> str:
    """Iterations closed per minute."""
    bar = {
        "type": "bar",
        "x": [r["minute"] for r in rows],
        "y": [r["closed"] for r in rows],
        "marker": {"color": STATE_COLOURS["running"]},
    }
    layout = _minute_layout(window, "iterations / min")
    return _html([bar], layout, f"domain-{domain_id}-throughput")


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def latency(domain_id: int, rows: list[IterationMinute], window: list[datetime]) -> str:
    """How long an iteration took, from its broadcast to its close: median and p95."""
    xs = [r["minute"] for r in rows]
    series = (
        ("median", [r["p50"] for r in rows], STATE_COLOURS["running"]),
        ("p95", [r["p95"] for r in rows], STATE_COLOURS["interrupted"]),
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
        "marker": {"color": STATE_COLOURS["halted"]},
    }
    layout = _minute_layout(window, "failed calls", tickformat=".0%")
    return _html([bar], layout, f"domain-{domain_id}-errors")


def cost(domain_id: int, rows: list[CallMinute], window: list[datetime]) -> str:
    """What the domain's agent calls cost, summed per minute."""
    bar = {
        "type": "bar",
        "x": [r["minute"] for r in rows],
        "y": [_round(r["cost"], 6) for r in rows],
        "marker": {"color": STATE_COLOURS["succeeded"]},
    }
    return _html([bar], _minute_layout(window, "cost / min"), f"domain-{domain_id}-cost")
