"""Failure patterns → guardrails (CONCEPTS 66): N identical failures raise one alert."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from loops import engine, services
from loops.models import Agent, Contribution, LoopRun
from oversight.models import Alert, FailurePattern
from oversight.services.patterns import failures_record

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared_breakers")]


def _repeated() -> list[Alert]:
    return list(Alert.objects.filter(kind="failure.repeated"))


def _fail(agent: Agent, message: str, now=None) -> None:
    with transaction.atomic():
        failures_record([(agent.pk, "timeout", message)], now=now)


def test_it_raises_one_alert_for_many_identical_failures():
    agent = Agent.objects.get(name="flaky")

    for seconds in (3.2, 4.1, 2.9, 5.0, 3.3, 4.4):  # the same failure, other numbers
        _fail(agent, f"no answer after {seconds} s")

    alerts = _repeated()
    assert len(alerts) == 1
    assert alerts[0].target_id == str(agent.pk)
    assert alerts[0].body.startswith("3 identical failures")  # raised at the third
    assert FailurePattern.objects.get().count == 6


def test_it_keeps_different_failures_apart_and_quiet_below_the_threshold():
    agent = Agent.objects.get(name="flaky")

    _fail(agent, "no answer after 3 s")
    _fail(agent, "no answer after 4 s")
    _fail(agent, "connection refused")

    assert _repeated() == []
    assert sorted(FailurePattern.objects.values_list("count", flat=True)) == [1, 2]


def test_it_alerts_again_only_after_an_acknowledgement_or_a_quiet_window():
    agent = Agent.objects.get(name="flaky")
    now = timezone.now()
    for _ in range(4):
        _fail(agent, "boom", now=now)
    Alert.objects.filter(kind="failure.repeated").update(acknowledged_at=now)

    for _ in range(3):
        _fail(agent, "boom", now=now)
    assert len(_repeated()) == 2

    later = now + timedelta(hours=1)  # a quiet hour: the streak starts again
    _fail(agent, "boom", now=later)
    _fail(agent, "boom", now=later)
    assert len(_repeated()) == 2 and FailurePattern.objects.get().count == 2


def test_it_counts_the_failed_calls_of_real_runs(settings):
    """The flaky agent's own breaker opens after two failures and keeps it out of further
    broadcasts; the pattern counted both, and two is this test's threshold."""
    from tests.oversight import decl_breakers

    settings.FAILURE_PATTERN_THRESHOLD = 2
    decl_breakers.FLAKY["fail"] = True
    try:
        runs = [
            services.run_start(domain="plant", blueprint="plant-work", input={}) for _ in range(3)
        ]
        for run in runs:
            for _ in range(6):
                if LoopRun.objects.get(pk=run.pk).state == "running":
                    engine.advance(run_id=run.pk)
    finally:
        decl_breakers.FLAKY["fail"] = False

    failed = Contribution.objects.filter(agent__name="flaky", status="failed").count()
    assert failed >= 2
    assert len(_repeated()) == 1
    assert FailurePattern.objects.get(agent__name="flaky").count == failed
