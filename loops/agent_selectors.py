"""Reads for the agents page: every agent with its learned stats and recent failures, in a
fixed number of queries however many agents, stats or contributions there are."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db.models import Prefetch
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
