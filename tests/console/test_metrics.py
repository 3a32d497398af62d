"""GET /metrics (console.metrics): who may scrape it, gauges that match the rows, histograms
observed in other processes (the real worker) and summed at the scrape, and a scrape whose
queries do not grow with the data."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from common import metrics
from console import launcher
from console.auth import token_create
from loops import services
from loops.models import Iteration, LoopRun
from oversight.models import CircuitBreaker, Interrupt
from oversight.services import halts
from oversight.services.breakers import breaker_force_open
from oversight.services.deadlines import interrupt_expire
from oversight.services.interrupts import interrupt_decide
from tests.conftest import bearer, drive, signed_in, wait_for, with_role

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


@pytest.fixture
def scrape(viewer):
    """Scrape as a viewer's token; returns {(name, labels): value} of every sample."""
    client = bearer(token_create(user=viewer))

    def scrape() -> dict[tuple[str, frozenset], float]:
        response = client.get("/metrics")
        assert response.status_code == 200, response.content
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.content.decode())
            for sample in family.samples
        }

    return scrape


def _total(samples: dict, name: str, **labels: str) -> float:
    """The sum of name's samples whose labels include labels."""
    wanted = set(labels.items())
    return sum(value for (n, got), value in samples.items() if n == name and wanted <= got)


# --- Who may scrape --------------------------------------------------------------------------


def test_it_refuses_anonymous_with_401(client):
    response = client.get("/metrics")

    assert response.status_code == 401
    assert response.json()["error"] == "unauthenticated"


def test_it_refuses_a_user_without_a_role_by_session_and_by_token(django_user_model):
    nobody = django_user_model.objects.create_user("nobody", password="x")

    by_session = signed_in(nobody).get("/metrics")
    by_token = bearer(token_create(user=nobody)).get("/metrics")

    assert (by_session.status_code, by_token.status_code) == (403, 403)
    assert "viewer role" in by_token.json()["detail"]


def test_it_refuses_an_unknown_token():
    assert bearer("not-a-token").get("/metrics").status_code == 401


def test_it_serves_a_viewers_token_in_the_prometheus_format(viewer):
    response = bearer(token_create(user=viewer)).get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    # The histograms appear with their first observation (below); the gauges always.
    assert {"loop_runs", "interrupts_pending", "breakers_open", "halts_active"} <= names


def test_it_serves_a_viewers_session(viewer):
    assert signed_in(viewer).get("/metrics").status_code == 200


# --- Gauges: what PostgreSQL holds at the scrape ----------------------------------------------


def test_the_gauges_match_the_rows(scrape, django_user_model):
    admin = with_role(django_user_model.objects.create_user("ada", password="x"), "admin")
    for _ in range(3):
        services.run_start(domain="arena", blueprint="arena-all", input={})
    dosing = drive(services.run_start(domain="ward", blueprint="ward-dose", input={}))
    interrupt = Interrupt.objects.get(run__root_id=dosing.root_id, status="pending")
    breaker = CircuitBreaker.objects.order_by("pk").first()
    assert breaker is not None
    breaker_force_open(breaker_id=breaker.pk, actor=admin, reason="metrics test")
    halts.halt_engage(actor=admin, scope="domain:quay", reason="metrics test")

    samples = scrape()

    live = LoopRun.objects.filter(state__in=LoopRun.LIVE)
    for domain, state in {(run.domain.slug, run.state) for run in live.select_related("domain")}:
        rows = live.filter(domain__slug=domain, state=state).count()
        assert _total(samples, "loop_runs", domain=domain, state=state) == rows
    assert _total(samples, "loop_runs", domain="arena") == 3
    assert _total(samples, "loop_runs", domain="ward", state="interrupted") == 1
    assert _total(samples, "loop_runs", domain="plant") == 0  # reported, as zero
    assert _total(samples, "interrupts_pending", severity=interrupt.severity) == 1
    assert _total(samples, "interrupts_pending") == 1
    assert _total(samples, "breakers_open", scope=breaker.scope, state="open") == 1
    assert _total(samples, "breakers_open") == 1
    assert _total(samples, "halts_active", kind="domain") == 1
    assert _total(samples, "halts_active") == 1


def test_a_scrape_makes_as_many_queries_with_ten_times_the_runs(viewer):
    client = signed_in(viewer)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/metrics").status_code == 200
        return len(captured.captured_queries)

    services.run_start(domain="arena", blueprint="arena-all", input={})
    few = queries()
    for _ in range(10):
        services.run_start(domain="arena", blueprint="arena-all", input={})
        services.run_start(domain="lab", blueprint="lab-main", input={})
    drive(services.run_start(domain="ward", blueprint="ward-dose", input={}))

    assert queries() == few
    assert few <= 10  # the session and the role, then the gauges' five


# --- Histograms: observed where it happens, summed at the scrape ------------------------------


def _local_iterations() -> float:
    """This process's own count of closed iterations (the values in its own file)."""
    return sum(
        sample.value
        for family in metrics.LOOP_ITERATION_SECONDS.collect()
        for sample in family.samples
        if sample.name.endswith("_count")
    )


@pytest.mark.django_db(transaction=True)  # the worker process must see committed rows
def test_iterations_closed_on_the_real_worker_are_counted(celery_worker, scrape):
    before, local = scrape(), _local_iterations()

    run = services.run_start(domain="arena", blueprint="arena-all", input={})
    wait_for(lambda: LoopRun.objects.get(pk=run.pk).is_terminal, 60)

    closed = Iteration.objects.filter(run=run, closed_at__isnull=False)
    assert closed.count() >= 1
    after = scrape()
    name, labels = "loop_iteration_seconds_count", {"domain": "arena", "outcome": "validated"}
    assert _total(after, name, **labels) - _total(before, name, **labels) == closed.count()
    assert _local_iterations() == local  # counted in the worker's process, not this one
    assert _total(after, "loop_iteration_seconds_sum", domain="arena") > _total(
        before, "loop_iteration_seconds_sum", domain="arena"
    )


@pytest.mark.django_db(transaction=True)  # observed after commit (common.metrics)
def test_a_decision_and_an_expiry_are_counted_with_their_latency(scrape, django_user_model):
    operator = with_role(django_user_model.objects.create_user("otto", password="x"), "operator")
    decided = drive(services.run_start(domain="ward", blueprint="ward-dose", input={}))
    expiring = drive(services.run_start(domain="ward", blueprint="ward-dose", input={}))
    first = Interrupt.objects.get(run__root_id=decided.root_id, status="pending")
    second = Interrupt.objects.get(run__root_id=expiring.root_id, status="pending")
    # Raised a minute ago, so the decision's latency is at least that.
    Interrupt.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(minutes=1))
    before = scrape()

    interrupt_decide(interrupt_id=first.pk, actor=operator, decision="approve")
    middle = scrape()
    interrupt_expire(interrupt_id=second.pk, now=second.deadline_at + timedelta(seconds=1))
    after = scrape()

    count = "interrupt_decision_seconds_count"
    assert _total(middle, count, how="human") - _total(before, count, how="human") == 1
    assert _total(middle, count, how="expired") == _total(before, count, how="expired")
    assert _total(after, count, how="expired") - _total(middle, count, how="expired") == 1
    seconds = "interrupt_decision_seconds_sum"
    assert _total(middle, seconds, how="human") - _total(before, seconds, how="human") >= 60


# --- The multiprocess folder ------------------------------------------------------------------


def test_the_launcher_empties_the_metrics_folder_before_a_start(tmp_path, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "histogram_4242.db").write_bytes(b"stale")
    (folder / "keep.txt").write_text("not ours")

    launcher._metrics_clear(tmp_path)

    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]
