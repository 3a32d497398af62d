"""Pushable partials of the loops pages (STYLE.md B.7): the one place that names them. These
functions only render what they are given; the reads are loops.selectors'."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.template.loader import render_to_string

from loops import charts
from loops.models import Domain, LoopRun
from loops.selectors import STACK_CAP

DOMAIN_STACK = "loops/_domain_stack.html"


def domain_stack_context(domain: Domain, frames: list[LoopRun]) -> dict[str, Any]:
    """The live stack partial's context, from the domain's frames (selectors.stack_frames)."""
    counts = Counter(frame.state for frame in frames)
    return {
        "domain": domain,
        "frames": frames,
        # The chart's key, and its states as text for those who cannot see the colours.
        "legend": [
            {"state": state, "count": counts[state], "colour": colour}
            for state, colour in charts.STATE_COLOURS.items()
            if counts[state]
        ],
        "capped": len(frames) >= STACK_CAP,
        "stack_chart": charts.stack_icicle(domain.slug, frames) if frames else "",
    }


def domain_stack(domain: Domain, frames: list[LoopRun]) -> str:
    """The live stack chart as pushed over the websocket: no request."""
    return render_to_string(DOMAIN_STACK, {**domain_stack_context(domain, frames), "oob": True})
