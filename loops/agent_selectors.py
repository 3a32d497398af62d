"""Reads for the agents page: every agent with its learned stats and recent failures, in a
fixed number of queries however many agents, stats or contributions there are."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import F, Prefetch, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from loops.models import Agent, AgentStat, Contribution

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
        rows = (
            Contribution.objects.filter(
                agent_id__in=[a.pk for a in agents], status=Contribution.Status.FAILED
            )
            .annotate(
                rn=Window(
                    RowNumber(),
                    partition_by=F("agent_id"),
                    order_by=[F("finished_at").desc(nulls_last=True), F("id").desc()],
                )
            )
            .filter(rn__lte=RECENT_FAILURES)
            .order_by("agent_id", "rn")
        )
        for row in rows:
            failures.setdefault(row.agent_id, []).append(row)
    now = timezone.now()
    return [
        AgentRow(a, liveness(a.heartbeat_at, now), list(a.stats.all()), failures.get(a.pk, []))
        for a in agents
    ]
