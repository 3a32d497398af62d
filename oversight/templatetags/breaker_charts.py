"""The breaker metric chart: an inline SVG of the recent samples' metric against the threshold.

plotly is not a declared dependency of the project, so the chart is drawn here instead of
with plotly.graph_objects (STYLE.md B.7). It reads only breaker.samples: no queries, and a
pushed row (no request) draws the same chart as the page.
"""

from __future__ import annotations

from django import template
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from oversight.models import CircuitBreaker

register = template.Library()
Metric = CircuitBreaker.Metric
W, H = 160, 40


def metric_series(breaker: CircuitBreaker) -> list[tuple[float, float]]:
    """(time, metric as it stood after that call) for each sample in the window."""
    points: list[tuple[float, float]] = []
    streak = failed = 0
    cost = latency = 0.0
    for i, (t, ok, c, ms, value) in enumerate(breaker.samples, start=1):
        streak = 0 if ok else streak + 1
        failed += 0 if ok else 1
        cost += c or 0
        latency += ms or 0
        series: dict[str, float | None] = {
            Metric.CONSECUTIVE_FAILURES: float(streak),
            Metric.ERROR_RATE: failed / i,
            Metric.COST_WINDOW: cost,
            Metric.LATENCY: latency / i,
            Metric.REPORTED_VALUE: value,
        }
        y = series.get(breaker.metric)
        if y is not None:
            points.append((float(t), float(y)))
    return points


@register.simple_tag
def breaker_chart(breaker: CircuitBreaker) -> str:
    points = metric_series(breaker)
    label = f"{breaker.get_metric_display()} against threshold {breaker.threshold:g}"
    if not points:
        return mark_safe('<span class="empty chart-empty">no calls in the window</span>')
    top = max(max(y for _, y in points), breaker.threshold) * 1.1 or 1.0
    t0, t1 = points[0][0], points[-1][0]
    span = (t1 - t0) or 1.0

    def xy(t: float, y: float) -> str:
        x = (t - t0) / span * W if len(points) > 1 else W / 2
        return f"{x:.1f},{H - y / top * H:.1f}"

    line = " ".join(xy(t, y) for t, y in points)
    ty = H - breaker.threshold / top * H
    return format_html(
        '<svg class="breaker-chart" viewBox="0 0 {} {}" width="{}" height="{}" role="img" '
        'aria-label="{}"><title>{}: last {}</title>'
        '<line class="threshold" x1="0" x2="{}" y1="{}" y2="{}"/>'
        '<polyline class="metric" points="{}"/></svg>',
        W,
        H,
        W,
        H,
        label,
        label,
        f"{points[-1][1]:g}",
        W,
        f"{ty:.1f}",
        f"{ty:.1f}",
        line,
    )
