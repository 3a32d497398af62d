from __future__ import annotations

from django.http import HttpRequest

from console.liveness import worker_count_or_none


def console_status(request: HttpRequest) -> dict[str, object]:
    # Callables: the template engine calls them only on pages that show the status bar.
    from oversight.selectors import active_halts, alert_feed
    from oversight.urgent import pending_decisions

    return {
        "workers": worker_count_or_none,
        "active_halts": active_halts,
        "alert_feed": alert_feed,
        "pending_decisions": pending_decisions,  # the header's count and soonest, one query
    }
