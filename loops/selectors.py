"""Reads for the API, the console and the management commands. Each answers in a fixed
number of queries, however many rows it returns (select_related / prefetch_related)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Prefetch, Q, QuerySet
from django.db.models.fields.json import KT
from django.utils import timezone

from common.pagination import page_clamped
from loops.models import (
    Agent,
    AgentStat,
    Bid,
    Blueprint,
    Contribution,
    Domain,
    DomainMinute,
    Event,
    Iteration,
    LoopRun,
)
from loops.remotes import REMOTE_KEYS
from loops.rollup import WINDOW_MINUTES, CallMinute, IterationMinute
from realms.models import Peer


@dataclass
class DomainStatus:
    slug: str
    name: str
    state: str  # processing | active | standby (CONCEPTS 13)
    counts: dict[str, int] = field(default_factory=dict)
    runs_live: int = 0


def domain_list_with_counts() -> list[DomainStatus]:
    """Every domain with its derived state and its runs counted by state (two queries).

    1. Count runs per (domain, state), and among them those below the main loop.
    2. A domain with a live child run is processing: its main loop has delegated work.
       Live main runs alone make it active; no live run leaves it on standby.
    """
    rows = (
        LoopRun.objects.order_by()  # no ordering, so that it cannot split the groups
        .values("domain_id", "state")
        .annotate(n=Count("id"), below_main=Count("id", filter=Q(depth__gt=0)))
    )
    grouped: dict[int, list[Any]] = {}
    for row in rows:
        grouped.setdefault(row["domain_id"], []).append(row)
    result = []
    for domain in Domain.objects.all():
        counts = dict.fromkeys(LoopRun.State.values, 0)
        live = deep = 0
        for row in grouped.get(domain.pk, ()):
            counts[row["state"]] = row["n"]
            if row["state"] in LoopRun.LIVE:
                live += row["n"]
                deep += row["below_main"]
        state = "processing" if deep else "active" if live else "standby"
        result.append(DomainStatus(domain.slug, domain.name, state, counts, live))
    return result


def blueprint_list(*, domain: str | None = None) -> QuerySet[Blueprint]:
    blueprints = Blueprint.objects.select_related("domain")
    if domain:
        blueprints = blueprints.filter(domain__slug=domain)
    return blueprints


def run_list(
    *,
    domain: str | None = None,
    states: Iterable[str] | None = None,
    parent: int | None = None,
    root: int | None = None,
) -> QuerySet[LoopRun]:
    runs = LoopRun.objects.select_related("blueprint", "domain")
    if domain:
        runs = runs.filter(domain__slug=domain)
    if states is not None:
        runs = runs.filter(state__in=list(states))
    if parent is not None:
        runs = runs.filter(parent_id=parent)
    if root is not None:
        runs = runs.filter(root_id=root)
    return runs


def run_get_with_stack(run_id: int) -> LoopRun:
    """A run with its blueprint, domain and the ids of its children (raises DoesNotExist)."""
    children = LoopRun.objects.only("id", "parent_id").order_by("id")
    return (
        LoopRun.objects.select_related("blueprint", "domain")
        .prefetch_related(Prefetch("children", queryset=children))
        .get(pk=run_id)
    )


def _require_run(run_id: int) -> LoopRun:
    return LoopRun.objects.only("id", "root_id").get(pk=run_id)


def iteration_list_for_run(run_id: int) -> QuerySet[Iteration]:
    """A run's iterations with their bids and contributions and the agents' names."""
    _require_run(run_id)
    return (
        Iteration.objects.filter(run_id=run_id)
        .order_by("number")
        .prefetch_related(
            Prefetch("bids", queryset=Bid.objects.select_related("agent")),
            Prefetch("contributions", queryset=Contribution.objects.select_related("agent")),
        )
    )


def event_list_for_run(run_id: int, *, after: int = 0) -> QuerySet[Event]:
    """The trace of the stack the run belongs to (its root's), from seq after + 1 on."""
    run = _require_run(run_id)
    return Event.objects.filter(root_id=run.root_id or run.pk, seq__gt=after).order_by("seq")


def agent_list(*, domain: str | None = None) -> QuerySet[Agent]:
    agents = Agent.objects.select_related("domain")
    if domain:
        agents = agents.filter(domain__slug=domain)
    return agents


# --- The domain page's live stack ----------------------------------------------------------

STACK_CAP = 300


def stack_frames(domain_id: int, *, cap: int = STACK_CAP) -> list[LoopRun]:
    """The frames of the domain's live stacks: every run under a live root (one query; a
    second when remote frames are among them). A remote frame carries its realm, blueprint
    and state there (only those keys of `remote`: its view may be long) and `unreachable`,
    whether its peer cannot be reached now (DESIGN.md H10)."""
    frames = list(
        LoopRun.objects.filter(domain_id=domain_id, root__state__in=LoopRun.LIVE)
        .select_related("blueprint")
        .only("id", "parent_id", "root_id", "depth", "state", "blueprint__name")
        .annotate(**{name: KT(path) for name, path in REMOTE_KEYS.items()})
        .order_by("depth", "id")[:cap]
    )
    realms = {f.remote_realm for f in frames if f.remote_realm is not None}  # type: ignore[attr-defined]
    down = set(Peer.objects.filter(slug__in=realms, reachable=False).values_list("slug", flat=True))
    for frame in frames:
        frame.unreachable = frame.remote_realm in down  # type: ignore[attr-defined]
    return frames


# --- The domain page's live main runs: a page at a time, however many are live. ----------

MAIN_RUNS_PER_PAGE = 25


@dataclass
class MainRunsPage:
    runs: list[LoopRun]  # one page of them, newest first
    total: int
    page: int = 1  # clamped to the last, as the run page's iterations
    pages: int = 1
    first: int = 0  # the page's place in the newest-first list, from 1 (0 when empty)
    last: int = 0


def live_main_runs_page(
    domain_id: int, *, page: int = 1, per_page: int = MAIN_RUNS_PER_PAGE
) -> MainRunsPage:
    """The domain's live main runs (depth 0), newest first, one page of them (two queries):
    each row renders its own controls, so the page shows a bounded number of them (issue 8)
    and the pager reaches the rest."""
    live = (
        LoopRun.objects.filter(domain_id=domain_id, depth=0, state__in=list(LoopRun.LIVE))
        .select_related("blueprint")
        .defer("input", "context", "result", "exit_detail")  # the rows show none of them
        .order_by("-created_at", "-id")
    )
    shown = page_clamped(live, page, per_page=per_page)
    return MainRunsPage(
        runs=list(shown.object_list),
        total=shown.paginator.count,
        page=shown.number,
        pages=shown.paginator.num_pages,
        first=shown.start_index(),
        last=shown.end_index(),
    )


# --- The run page (loops.views.stacks): a fixed number of queries, however long the run. ---


@dataclass
class RunPage:
    run: LoopRun
    path: list[LoopRun]  # root → … → run
    children: list[LoopRun]
    iterations: list[Iteration]  # one page of them, newest first
    iterations_total: int
    max_iterations: int | None
    success_rates: dict[tuple[int, str], float] = field(default_factory=dict)
    page: int = 1  # the page of iterations shown (1: the newest), clamped to the last
    pages: int = 1
    first: int = 0  # the page's place in the newest-first list, from 1 (0 when empty)
    last: int = 0

    @property
    def root(self) -> LoopRun | None:
        """The stack's main frame, when it is not this run (the first of the path)."""
        return self.path[0] if len(self.path) > 1 else None

    @property
    def parent(self) -> LoopRun | None:
        """The frame that called this run (None for a main run)."""
        return self.path[-2] if len(self.path) > 1 else None


ITERATIONS_PER_PAGE = 50


def run_get_page(run_id: int, *, page: int = 1, per_page: int = ITERATIONS_PER_PAGE) -> RunPage:
    """Everything the run page shows, with one page of its iterations (raises
    LoopRun.DoesNotExist). A page past the last is the last: iterations only grow, so such a
    number comes from a hand-made URL, and its nearest page is the useful answer."""
    from loops.declare import BLUEPRINTS
    from loops.models import AgentStat

    run = LoopRun.objects.select_related("blueprint", "domain").get(pk=run_id)
    above = {
        r.pk: r
        for r in LoopRun.objects.filter(root_id=run.root_id or run.pk, depth__lt=run.depth)
        .select_related("blueprint")
        .only("id", "parent_id", "depth", "state", "blueprint__name")
    }
    path = [run]
    while path[0].parent_id in above:
        path.insert(0, above[path[0].parent_id])
    children = list(
        LoopRun.objects.filter(parent_id=run.pk).select_related("blueprint").order_by("id")
    )
    shown = page_clamped(
        Iteration.objects.filter(run_id=run.pk)
        .order_by("-number")
        .prefetch_related(
            Prefetch("bids", queryset=Bid.objects.select_related("agent")),
            Prefetch("contributions", queryset=Contribution.objects.select_related("agent")),
        ),
        page,
        per_page=per_page,
    )
    iterations = list(shown.object_list)
    agent_ids = {bid.agent_id for it in iterations for bid in it.bids.all()}
    rates = {
        (stat.agent_id, stat.task_type): stat.mean
        for stat in AgentStat.objects.filter(agent_id__in=agent_ids)
    }
    for it in iterations:
        task_type = (it.broadcast or {}).get("task_type", "")
        for bid in it.bids.all():
            bid.success_rate = rates.get((bid.agent_id, task_type))
    spec = BLUEPRINTS.get(run.blueprint.name)
    return RunPage(
        run=run,
        path=path,
        children=children,
        iterations=iterations,
        iterations_total=shown.paginator.count,
        max_iterations=spec.policy.exits.max_iterations if spec else None,
        success_rates=rates,
        page=shown.number,
        pages=shown.paginator.num_pages,
        first=shown.start_index(),
        last=shown.end_index(),
    )


# --- The agents page -----------------------------------------------------------------------

RECENT_FAILURES = 5


@dataclass
class AgentRow:
    agent: Agent
    liveness: str  # live | stale | never
    stats: list[AgentStat] = field(default_factory=list)
    failures: list[Contribution] = field(default_factory=list)


def liveness(heartbeat_at: datetime | None, now: datetime) -> str:
    if heartbeat_at is None:
        return "never"
    age = (now - heartbeat_at).total_seconds()
    return "live" if age <= settings.AGENT_HEARTBEAT_SECONDS else "stale"


def agent_list_with_stats() -> list[AgentRow]:
    """Agents with their domain and stats (two queries) and their last failures (one)."""
    agents = list(
        Agent.objects.select_related("domain").prefetch_related(
            Prefetch("stats", queryset=AgentStat.objects.order_by("task_type"))
        )
    )
    failures: dict[int, list[Contribution]] = {}
    if agents:
        # Each agent's latest failures by the index contribution_failures: a few rows per
        # agent, however many failed calls there have been (a window over all of them was
        # the page's slowest read, bench.pages).
        rows = Contribution.objects.raw(
            """
            SELECT c.* FROM unnest(%s::bigint[]) AS a(id) CROSS JOIN LATERAL (
                SELECT * FROM loops_contribution
                WHERE agent_id = a.id AND status = %s
                ORDER BY finished_at DESC NULLS LAST, id DESC
                LIMIT %s
            ) c
            ORDER BY c.agent_id, c.finished_at DESC NULLS LAST, c.id DESC
            """,
            [[a.pk for a in agents], Contribution.Status.FAILED, RECENT_FAILURES],
        )
        for row in rows:
            failures.setdefault(row.agent_id, []).append(row)
    now = timezone.now()
    return [
        AgentRow(a, liveness(a.heartbeat_at, now), list(a.stats.all()), failures.get(a.pk, []))
        for a in agents
    ]


# --- The domain page's activity (loops.rollup) ---------------------------------------------


def activity_minutes(
    domain_id: int, since: datetime, *, minutes: int = WINDOW_MINUTES
) -> tuple[list[IterationMinute], list[CallMinute]]:
    """The domain's rolled-up minutes from since on, an hour of them at most (one query):
    those in which iterations closed, and those in which calls finished."""
    until = since + timedelta(minutes=minutes)  # minutes a clock ahead wrote stay out
    rows = list(
        DomainMinute.objects.filter(domain_id=domain_id, minute__gte=since, minute__lt=until)
        .order_by("minute")
        .values_list("minute", "closed", "p50", "p95", "calls", "failed", "cost")
    )
    iterations = [
        IterationMinute(minute=minute, closed=closed, p50=p50, p95=p95)
        for minute, closed, p50, p95, *_ in rows
        if closed
    ]
    calls = [
        CallMinute(minute=minute, calls=n, failed=failed, cost=amount)
        for minute, _, _, _, n, failed, amount in rows
        if n
    ]
    return iterations, calls
