"""The overview's domain cards (the console's dashboard and the cards pushed on a halt).

Every read is an aggregate, so the cards cost the same handful of queries however many
runs, iterations, interrupts and breakers there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count
from django.db.models.functions import Coalesce, TruncMinute
from django.utils import timezone

from loops.models import Iteration, LoopRun
from loops.selectors import DomainStatus, domain_list_with_counts
from oversight.models import CircuitBreaker, Halt, Interrupt

SPARK_MINUTES = 10
SPARK_WIDTH, SPARK_HEIGHT = 100, 24


@dataclass
class DomainCard:
    status: DomainStatus
    halted: bool = False
    pending_approvals: int = 0
    open_breakers: int = 0
    per_minute: list[int] = field(default_factory=list)  # oldest first, SPARK_MINUTES long

    @property
    def slug(self) -> str:
        return self.status.slug

    @property
    def state(self) -> str:
        return "halted" if self.halted else self.status.state

    @property
    def runs_live(self) -> int:
        """Runs that can still step: a halted run is parked, not live."""
        return self.status.runs_live - self.status.counts.get(LoopRun.State.HALTED, 0)

    @property
    def iterations(self) -> int:
        return sum(self.per_minute)

    @property
    def spark_points(self) -> str:
        """The SVG polyline of iterations per minute, scaled to the busiest minute."""
        top = max(self.per_minute, default=0) or 1
        step = SPARK_WIDTH / max(len(self.per_minute) - 1, 1)
        return " ".join(
            f"{i * step:.1f},{SPARK_HEIGHT - 1 - n * (SPARK_HEIGHT - 2) / top:.1f}"
            for i, n in enumerate(self.per_minute)
        )


def domain_cards(slugs: list[str] | None = None) -> list[DomainCard]:
    """Every domain's card (or those named), in six queries whatever the data size."""
    now = timezone.now()
    start = (now - timedelta(minutes=SPARK_MINUTES - 1)).replace(second=0, microsecond=0)
    per_minute: dict[int, list[int]] = {}
    rows = (
        Iteration.objects.filter(started_at__gte=start)
        .order_by()
        .values("run__domain_id", minute=TruncMinute("started_at"))
        .annotate(n=Count("id"))
    )
    for row in rows:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < SPARK_MINUTES:
            per_minute.setdefault(row["run__domain_id"], [0] * SPARK_MINUTES)[index] += row["n"]
    pending = _counts(Interrupt.objects.filter(status=Interrupt.Status.PENDING), "run__domain_id")
    breakers = _counts(
        CircuitBreaker.objects.exclude(state=CircuitBreaker.State.CLOSED).annotate(
            scope_domain=Coalesce("domain_id", "blueprint__domain_id", "agent__domain_id")
        ),
        "scope_domain",
    )
    halts = set(Halt.objects.filter(lifted_at__isnull=True).values_list("kind", "domain_id"))
    everything = any(kind == Halt.Kind.GLOBAL for kind, _ in halts)
    ids = dict(_domain_ids())
    cards = []
    for status in domain_list_with_counts():
        if slugs is not None and status.slug not in slugs:
            continue
        pk = ids.get(status.slug, 0)
        cards.append(
            DomainCard(
                status,
                halted=everything or (Halt.Kind.DOMAIN, pk) in halts,
                pending_approvals=pending.get(pk, 0),
                open_breakers=breakers.get(pk, 0),
                per_minute=per_minute.get(pk, [0] * SPARK_MINUTES),
            )
        )
    return cards


def overview_totals(cards: list[DomainCard]) -> dict[str, int]:
    return {
        "runs_live": sum(c.runs_live for c in cards),
        "pending_approvals": sum(c.pending_approvals for c in cards),
        "open_breakers": sum(c.open_breakers for c in cards),
        "halted": sum(c.halted for c in cards),
        "iterations": sum(c.iterations for c in cards),
    }


def _counts(queryset, key: str) -> dict[int, int]:
    rows = queryset.order_by().values(key).annotate(n=Count("id"))
    return {row[key]: row["n"] for row in rows}


def _domain_ids() -> list[tuple[str, int]]:
    from loops.models import Domain

    return list(Domain.objects.values_list("slug", "pk"))
