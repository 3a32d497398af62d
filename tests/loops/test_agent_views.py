"""The agents page: registry, liveness, capabilities, learned success and recent failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from loops.models import Agent, AgentStat, Blueprint, Contribution, Domain, Iteration, LoopRun

# Every test is vera's, the viewer of tests/conftest.py, signed in on the test's client.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("viewer")]


def make_agents(count: int, prefix: str = "a") -> list[Agent]:
    domain, _ = Domain.objects.get_or_create(slug="viewfarm", defaults={"name": "View farm"})
    blueprint, _ = Blueprint.objects.get_or_create(
        name="viewfarm-main", defaults={"kind": "main", "domain": domain}
    )
    run = LoopRun.objects.create(blueprint=blueprint, domain=domain)
    now = timezone.now()
    agents = []
    for i in range(count):
        agent = Agent.objects.create(
            domain=domain,
            name=f"{prefix}{i}",
            capabilities=["soil", "water"],
            heartbeat_at=now if i % 2 == 0 else now - timedelta(hours=1),
        )
        AgentStat.objects.create(
            agent=agent, task_type="farm.ask", alpha=4, beta=2, n=4, mean_latency_ms=250
        )
        for k in range(7):  # more than the page shows
            iteration = Iteration.objects.create(
                run=run,
                number=i * 10 + k,
                phase=0,
                phase_name="ask",
                bid_window_ends_at=now,
                gather_deadline_at=now,
            )
            Contribution.objects.create(
                iteration=iteration,
                agent=agent,
                status="failed",
                error_class="Timeout",
                error=f"timed out after {k} s",
                finished_at=now - timedelta(minutes=10 - k),
            )
        agents.append(agent)
    return agents


def test_it_shows_each_agent_with_liveness_learned_success_and_recent_failures(client):
    live, _stale = make_agents(2)
    Agent.objects.create(domain=live.domain, name="silent")
    response = client.get(reverse("loops:agents"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "viewfarm/a0" in html and "viewfarm/silent" in html
    assert "liveness-live" in html and "liveness-stale" in html and "liveness-never" in html
    assert "farm.ask" in html and "67%" in html and "250 ms" in html  # 4 / (4 + 2)
    assert "Timeout" in html and "timed out after 6 s" in html
    assert "timed out after 1 s" not in html  # only the last five
    assert "soil" in html
    assert "<form" not in html.split("<main>", 1)[1]


def test_a_user_without_a_role_gets_403(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("nobody", password="pw"))
    assert client.get(reverse("loops:agents")).status_code == 403


def test_the_query_count_does_not_grow_with_agents(client):
    make_agents(1)
    client.get(reverse("loops:agents"))
    with CaptureQueriesContext(connection) as small:
        client.get(reverse("loops:agents"))
    make_agents(8, prefix="b")
    with CaptureQueriesContext(connection) as large:
        assert client.get(reverse("loops:agents")).status_code == 200
    assert len(large) == len(small)
