"""The histograms of how long things take, observed where they happen, in whichever process
that is: an iteration's open → close (the engine) and an interrupt's raise → decision (the
interrupt services). Workers are forked processes, so prometheus_client runs in
multiprocess mode: each process writes its own file in PROMETHEUS_MULTIPROC_DIR and the
scrape (console.metrics) adds them up. Observed after commit, so a step rolled back and run
again is counted once."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from prometheus_client import Histogram

# Not in the default registry: in multiprocess mode the scrape reads the files, not objects.
LOOP_ITERATION_SECONDS = Histogram(
    "loop_iteration_seconds",
    "Seconds from an iteration's opening to its close (bids, calls, merge and validation).",
    ["domain", "outcome"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800),
    registry=None,
)
INTERRUPT_DECISION_SECONDS = Histogram(
    "interrupt_decision_seconds",
    "Seconds from an interrupt's raising to its decision: by a person (human) or by its "
    "deadline's default (expired).",
    ["how"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400),
    registry=None,
)


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


def iteration_closed_on_commit(
    *, domain: str, outcome: str, started: datetime, closed: datetime
) -> None:
    seconds = _seconds(started, closed)
    transaction.on_commit(
        lambda: LOOP_ITERATION_SECONDS.labels(domain=domain, outcome=outcome).observe(seconds)
    )


def interrupt_decided_on_commit(*, how: str, raised: datetime, decided: datetime) -> None:
    """how: "human" (a person decided) or "expired" (the deadline's default)."""
    seconds = _seconds(raised, decided)
    transaction.on_commit(lambda: INTERRUPT_DECISION_SECONDS.labels(how=how).observe(seconds))
