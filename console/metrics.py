"""The Prometheus endpoint, GET /metrics (README: Metrics and logs).

Two kinds of numbers:
- Gauges of what is in PostgreSQL now (live runs, pending interrupts, open breakers, active
  halts), read at scrape time by DatabaseCollector: five small queries whatever the data's
  size, each on an index.
- Histograms of how long things take, observed where they happen (common.metrics): each
  process writes its own file in PROMETHEUS_MULTIPROC_DIR (console.settings) and the scrape
  adds them up.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from ninja.errors import HttpError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from console.auth import Needs
from loops.models import Domain, LoopRun
from oversight.models import CircuitBreaker, Halt, Interrupt


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
