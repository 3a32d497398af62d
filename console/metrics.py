"""The Prometheus endpoint, GET /metrics (README: Metrics and logs).

Two kinds of numbers:
- Gauges of what is in PostgreSQL now (live runs, pending interrupts, open breakers, active
  halts), read at scrape time by DatabaseCollector: five small queries whatever the data's
  size, each on an index.
- Histograms of how long things take, observed where they happen, in whichever process that
  is: an iteration's open → close (loops.engine.judge) and an interrupt's raise → decision
  (oversight.services.interrupts). Workers are forked processes, so prometheus_client runs in
  multiprocess mode: each process writes its own file in PROMETHEUS_MULTIPROC_DIR
  (console.settings) and the scrape adds them up.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from ninja.errors import HttpError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from console.auth import Needs
from loops.models import Domain, Iteration, LoopRun
from oversight.models import CircuitBreaker, Halt, Interrupt

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


def iteration_closed(domain: str, iteration: Iteration) -> None:
    """Just after the close was saved (loops.engine.judge): no query, only the file write."""
    if iteration.closed_at is None:
        return
    seconds = max(0.0, (iteration.closed_at - iteration.started_at).total_seconds())
    LOOP_ITERATION_SECONDS.labels(domain=domain, outcome=iteration.outcome).observe(seconds)


def interrupt_decided(interrupt: Interrupt, *, how: str) -> None:
    """how: "human" (interrupt_decide) or "expired" (interrupt_expire)."""
    if interrupt.decided_at is None:
        return
    seconds = max(0.0, (interrupt.decided_at - interrupt.created_at).total_seconds())
    INTERRUPT_DECISION_SECONDS.labels(how=how).observe(seconds)


class DatabaseCollector(Collector):
    """The gauges, read from PostgreSQL at each scrape. Every label value is reported, zero
    included, so that a series does not vanish when its count drops to nothing."""

    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily(
            "loop_runs", "Runs in each live state, by domain.", labels=["domain", "state"]
        )
        slugs = dict(Domain.objects.values_list("pk", "slug"))
        counts = {
            (row["domain_id"], row["state"]): row["n"]
            for row in LoopRun.objects.filter(state__in=LoopRun.LIVE)
            .values("domain_id", "state")
            .annotate(n=Count("pk"))
            .order_by()
        }
        for pk, slug in sorted(slugs.items(), key=lambda item: item[1]):
            for state in sorted(LoopRun.LIVE):
                runs.add_metric([slug, state], counts.get((pk, state), 0))
        yield runs

        yield _grouped(
            "interrupts_pending",
            "Interrupts waiting for a decision, by severity.",
            Interrupt.objects.filter(status=Interrupt.Status.PENDING),
            {"severity": Interrupt.Severity.values},
        )
        yield _grouped(
            "breakers_open",
            "Circuit breakers not closed (open, or half-open for a trial), by scope.",
            CircuitBreaker.objects.exclude(state=CircuitBreaker.State.CLOSED),
            {
                "scope": CircuitBreaker.Scope.values,
                "state": [CircuitBreaker.State.OPEN.value, CircuitBreaker.State.HALF_OPEN.value],
            },
        )
        yield _grouped(
            "halts_active",
            "Halts in force (not lifted), by kind: global, domain or run.",
            Halt.objects.filter(lifted_at__isnull=True),
            {"kind": Halt.Kind.values},
        )


def _grouped(name: str, documentation: str, rows, labels: dict[str, list[str]]) -> Metric:
    """One GROUP BY over rows by the labels' fields; every combination of values reported."""
    fields = list(labels)
    family = GaugeMetricFamily(name, documentation, labels=fields)
    counts = {
        tuple(row[field] for field in fields): row["n"]
        for row in rows.values(*fields).annotate(n=Count("pk")).order_by()
    }
    combinations: list[tuple[str, ...]] = [()]
    for field in fields:
        combinations = [(*combo, value) for combo in combinations for value in labels[field]]
    for combo in combinations:
        family.add_metric(list(combo), counts.get(combo, 0))
    return family


# The same rule as reading runs through the API: a user's token or a session with a role.
_needs = Needs("loops.view_looprun")


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format. Refusals are the API's (401 without a token or a session,
    403 without a role, an agent's token included), so that a scraper sees a status, not the
    login page."""
    try:
        caller = _needs(request)
    except HttpError as exc:
        code = getattr(exc, "code", None) or "forbidden"  # console.auth.SignatureRefused
        return JsonResponse({"error": code, "detail": str(exc)}, status=exc.status_code)
    if caller is None:
        detail = "Sign in or send a bearer token."
        return JsonResponse({"error": "unauthenticated", "detail": detail}, status=401)
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(DatabaseCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
