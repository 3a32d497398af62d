"""Reads for the halt banner and pages: how many agent calls a halt holds in flight, counted
in the database (the banner is on every page, so it must not load the calls themselves)."""

from __future__ import annotations

from loops.models import Contribution
from oversight.halt_scope import halt_scope_ids
from oversight.models import Halt

IN_FLIGHT_CAP = 500  # as oversight.services.halts.halt_in_flight lists at most


def halt_in_flight_count(halt: Halt) -> int:
    """len(halt_in_flight(halt)) in one COUNT: the calls in the halt's scope that have not
    answered (pending or running; the partial index contribution_in_flight holds them)."""
    calls = Contribution.objects.filter(
        status__in=[Contribution.Status.RUNNING, Contribution.Status.PENDING],
        iteration__run_id__in=halt_scope_ids(halt),
    )
    return calls.order_by()[:IN_FLIGHT_CAP].count()
