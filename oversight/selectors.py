"""The oversight app's reads: the halt banner, the approval inbox, the breakers and audit
pages, the alerts feed and the overview's domain cards. Each answers in a fixed number of
queries however many rows there are; the pages, the htmx answers and the pushes render
what they return (oversight.fragments, console.fragments)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

from django.db.models import Count, F, Prefetch, QuerySet, Window
from django.db.models.functions import Coalesce, RowNumber, TruncMinute
from django.utils import timezone

from loops.models import Contribution, Domain, Iteration, LoopRun
from loops.selectors import DomainStatus, domain_list_with_counts
from loops.subtree import subtree_ids
from oversight.halt_scope import PARKABLE, halt_scope_ids
from oversight.models import Alert, AuditEvent, CircuitBreaker, Halt, Interrupt
from realms.models import Incoming, Outgoing

# --- Halts: the banner on every page, so counted in the database, never loaded ------------

IN_FLIGHT_CAP = 500  # as oversight.services.halts.halt_in_flight lists at most


def halt_in_flight_count(halt: Halt) -> int:
    """len(halt_in_flight(halt)) in one COUNT: the calls in the halt's scope that have not
    answered (pending or running; the partial index contribution_in_flight holds them)."""
    calls = Contribution.objects.filter(
        status__in=[Contribution.Status.RUNNING, Contribution.Status.PENDING],
        iteration__run_id__in=halt_scope_ids(halt),
    )
    return calls.order_by()[:IN_FLIGHT_CAP].count()


def halt_reach(kind: str, domain: Domain | None, run: LoopRun | None) -> dict[str, int]:
    """The peer realms a halt of this scope would reach (DESIGN.md H8): for each, how many
    open remote frames in scope it would halt there."""
    frames = LoopRun.objects.filter(remote__isnull=False, state__in=PARKABLE)
    if kind == Halt.Kind.DOMAIN:
        frames = frames.filter(domain=domain)
    elif kind == Halt.Kind.RUN and run is not None:
        frames = frames.filter(pk__in=subtree_ids(run.pk))
    rows = frames.values_list("remote__realm").annotate(n=Count("id")).order_by("remote__realm")
    return {str(realm): n for realm, n in rows}


def active_halts() -> list[Halt]:
    """Active halts, each with `in_flight`: its agent calls that have not answered yet, and
    what halt_peers adds."""
    halts = list(
        Halt.objects.filter(lifted_at__isnull=True)
        .select_related("created_by", "lift_requested_by")
        .order_by("created_at")
    )
    for halt in halts:
        halt.in_flight = halt_in_flight_count(halt)  # type: ignore[attr-defined]
    if halts:
        halt_peers(halts)
    return halts


def halt_peers(halts: list[Halt]) -> None:
    """DESIGN.md H8, for the banner (two queries for all the halts):
    `peers_reached`, the peer realms the halt's messages went to (one per remote frame it
    parked), and `peers_confirmed`, those that took every one of them (delivered: the
    peer halted what the frames had started there); `for_realm`, in the callee, the peer
    realm on whose behalf this realm engaged the halt ("" for a halt of its own)."""
    ids = [halt.pk for halt in halts]
    reached: dict[int, set[str]] = {}
    pending: dict[int, set[str]] = {}
    messages = Outgoing.objects.filter(method="loopstacks/Halt", params__halt__id__in=ids)
    for halt_id, peer, delivered in messages.values_list(
        "params__halt__id", "peer__slug", "delivered_at"
    ):
        reached.setdefault(halt_id, set()).add(peer)
        if delivered is None:
            pending.setdefault(halt_id, set()).add(peer)
    for_realm = dict(Incoming.objects.filter(halt_id__in=ids).values_list("halt_id", "peer__slug"))
    for halt in halts:
        peers = reached.get(halt.pk, set())
        halt.peers_reached = len(peers)  # type: ignore[attr-defined]
        halt.peers_confirmed = len(peers - pending.get(halt.pk, set()))  # type: ignore[attr-defined]
        halt.for_realm = for_realm.get(halt.pk) or _realm_named(halt)  # type: ignore[attr-defined]


# realms.services.remote_halts words a halt engaged on a peer's behalf so; the banner's
# first push renders before the call's Incoming row names the halt.
ON_BEHALF = re.compile(r"halted by realm ([a-z0-9_-]+) \(")


def _realm_named(halt: Halt) -> str:
    found = ON_BEHALF.match(halt.reason) if halt.created_by_id is None else None
    return found.group(1) if found else ""


# --- The approval inbox ----------------------------------------------------------------------

_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


def interrupts_with_history(queryset: QuerySet[Interrupt] | None = None) -> QuerySet[Interrupt]:
    """What a card shows: the run, who decided or claims it, and the run's earlier
    decisions (its relevant history) as `interrupt.run.history`."""
    queryset = Interrupt.objects.all() if queryset is None else queryset
    return queryset.select_related("run", "decided_by", "claimed_by").prefetch_related(
        Prefetch("run__interrupts", queryset=_decided(), to_attr="history"),
        "approvals",  # issue 18: who approved, for an interrupt that needs several
    )


def interrupt_get_with_history(interrupt_id: int) -> Interrupt:
    """One interrupt as its card shows it (raises Interrupt.DoesNotExist)."""
    return interrupts_with_history().get(pk=interrupt_id)


def interrupt_with_run_history(interrupt: Interrupt) -> Interrupt:
    """The interrupt in hand, with its run's earlier decisions set as
    `interrupt.run.history` in one query: the card then needs no other."""
    interrupt.run.history = run_decisions(interrupt.run_id)  # type: ignore[attr-defined]
    return interrupt


def run_decisions(run_id: int) -> list[Interrupt]:
    """The run's interrupts that are no longer pending, the latest first."""
    return list(_decided().filter(run_id=run_id))


def _decided() -> QuerySet[Interrupt]:
    return (
        Interrupt.objects.exclude(status=Interrupt.Status.PENDING)
        .select_related("decided_by")
        .order_by("-decided_at")
    )


def inbox_pending() -> list[Interrupt]:
    """Pending interrupts by deadline, then severity (critical first)."""
    pending = interrupts_with_history(Interrupt.objects.filter(status=Interrupt.Status.PENDING))
    return sorted(pending, key=lambda i: (i.deadline_at, _SEVERITY_RANK.get(i.severity, 9), i.pk))


# --- Alerts ------------------------------------------------------------------------------

# The feed's bound, on the page and in the browser (app.js trims pushed ones to it, data-keep):
# every alert in it is a control that the browser's scans of the page go over after each change.
RECENT_ALERTS = 50


@dataclass(frozen=True)
class AlertFeed:
    alerts: list[Alert]  # the newest unacknowledged, newest first
    more: bool  # older unacknowledged ones exist that the feed leaves out
    limit: int = RECENT_ALERTS


def alert_feed() -> AlertFeed:
    """What a page shows in its alerts panel when it loads; pushes prepend newer ones."""
    rows = list(Alert.objects.filter(acknowledged_at__isnull=True)[: RECENT_ALERTS + 1])
    return AlertFeed(rows[:RECENT_ALERTS], more=len(rows) > RECENT_ALERTS)


def recent_alerts() -> list[Alert]:
    """The feed's alerts alone."""
    return alert_feed().alerts


# --- Breakers: the row pushed on a change, and the page with each one's trip history -------

TRIP_VERBS = (
    "breaker.opened",
    "breaker.half_opened",
    "breaker.closed",
    "breaker.reset",
    "breaker.forced_open",
)
HISTORY_LIMIT = 10


def breaker_get_for_row(breaker_id: int) -> CircuitBreaker:
    """A breaker with what it guards, as its pushed row shows it (raises DoesNotExist)."""
    return CircuitBreaker.objects.select_related("agent", "blueprint", "domain").get(pk=breaker_id)


@dataclass
class BreakerItem:
    breaker: CircuitBreaker
    history: list[AuditEvent] = field(default_factory=list)
    reset_form: Any = None
    force_form: Any = None


def _history(breaker_ids: list[int]) -> dict[str, list[AuditEvent]]:
    """The last HISTORY_LIMIT trip events of each breaker, in one query."""
    if not breaker_ids:
        return {}
    rows = (
        AuditEvent.objects.filter(
            target_type="breaker", target_id__in=[str(i) for i in breaker_ids], verb__in=TRIP_VERBS
        )
        .annotate(
            rn=Window(
                RowNumber(), partition_by=F("target_id"), order_by=[F("at").desc(), F("id").desc()]
            )
        )
        .filter(rn__lte=HISTORY_LIMIT)
        .order_by("-at", "-id")
    )
    grouped: dict[str, list[AuditEvent]] = {}
    for row in rows:
        grouped.setdefault(row.target_id, []).append(row)
    return grouped


def breaker_list_with_history() -> list[BreakerItem]:
    """Every breaker with what it guards and its recent trip history (two queries)."""
    breakers = list(CircuitBreaker.objects.select_related("agent__domain", "blueprint", "domain"))
    history = _history([b.pk for b in breakers])
    return [BreakerItem(b, history.get(str(b.pk), [])) for b in breakers]


def breaker_get_with_history(breaker_id: int) -> BreakerItem:
    breaker = CircuitBreaker.objects.select_related("agent__domain", "blueprint", "domain").get(
        pk=breaker_id
    )
    return BreakerItem(breaker, _history([breaker.pk]).get(str(breaker.pk), []))


# --- The audit log -----------------------------------------------------------------------


def _day_start(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def audit_filter(
    *,
    actor: str = "",
    verb: str = "",
    target_type: str = "",
    target_id: str = "",
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    """Audit rows newest first; verb may be a prefix ending in "." (halt.); until is inclusive."""
    rows = AuditEvent.objects.order_by("-at", "-id")
    if actor:
        rows = rows.filter(actor_name=actor)
    if verb:
        rows = rows.filter(verb__startswith=verb) if verb.endswith(".") else rows.filter(verb=verb)
    if target_type:
        rows = rows.filter(target_type=target_type)
    if target_id:
        rows = rows.filter(target_id=target_id)
    if since:
        rows = rows.filter(at__gte=_day_start(since))
    if until:
        rows = rows.filter(at__lt=_day_start(until + timedelta(days=1)))
    return rows


# --- The overview's domain cards (the console's dashboard, and the cards pushed) -------------
# Every read is an aggregate, so the cards cost the same handful of queries however many
# runs, iterations, interrupts and breakers there are.

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
    ids = dict(Domain.objects.values_list("slug", "pk"))
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
