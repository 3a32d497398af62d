"""The header's pending decisions (issue 17) through the Django client and the push path: the
count and the soonest decision on every page, read in one query, and pushed to every console
when an interrupt is raised or leaves pending (and only then)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from common import push
from common.redis import redis_client
from console.pending import LAST_PUSHED
from loops.models import LoopRun
from loops.services import run_start
from loops.specs import Escalate
from loops.trace import Trace
from oversight.models import Interrupt
from oversight.services.interrupts import interrupt_decide, interrupt_raise
from oversight.urgent import decision_url, pending_decisions
from tests.conftest import person, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


def _interrupt(reason: str, *, deadline_s: float, severity: str = "warning") -> Interrupt:
    """A run of ward-dose stopped for a human, as the engine does it: in the run's transaction."""
    run = run_start(domain="ward", blueprint="ward-dose", input={})
    with transaction.atomic():
        locked = LoopRun.objects.select_for_update().get(pk=run.pk)
        trace = Trace(locked.root_id)
        interrupt = interrupt_raise(
            run=locked,
            trace=trace,
            source=Interrupt.Source.POLICY,
            reason=reason,
            policy=Escalate(deadline_s=deadline_s),
            proposal={"dose_mg": 1600},
            severity=severity,
        )
        trace.write()
    return interrupt


def _header(html: str) -> str:
    start = html.index('<div id="pending-decisions"')
    return html[start : html.index("</div>", start)]


def test_every_page_names_the_count_and_the_soonest_decision():
    client = signed_in(person("otto", "operator"))
    assert "No decisions pending" in _header(client.get("/").content.decode())

    _interrupt("dose over the limit", deadline_s=600)
    soonest = _interrupt("interaction: warfarin + aspirin", deadline_s=60, severity="critical")

    for page in ("/", "/oversight/breakers/", "/oversight/audit/"):
        header = _header(client.get(page).content.decode())
        assert 'data-count="2"' in header and "2 pending" in header, page
        assert f'href="{decision_url(soonest.pk)}"' in header
        assert "interaction: warfarin + aspirin" in header and "critical" in header
        assert f'datetime="{soonest.deadline_at.isoformat()}"' in header


def test_the_header_is_read_in_one_query_however_many_wait():
    for n in range(3):
        _interrupt(f"dose {n}", deadline_s=600 - n)
    with CaptureQueriesContext(connection) as few:
        assert pending_decisions().count == 3
    for n in range(12):
        _interrupt(f"more {n}", deadline_s=900)
    with CaptureQueriesContext(connection) as many:
        pending = pending_decisions()
    assert len(few) == len(many) == 1
    assert (pending.count, pending.soonest_reason) == (15, "dose 2")


def test_it_links_the_decision_page_and_names_the_newest_critical_one():
    _interrupt("first critical", deadline_s=60, severity="critical")
    newest = _interrupt("second critical", deadline_s=600, severity="critical")
    _interrupt("a warning", deadline_s=30)

    pending = pending_decisions()

    assert (pending.critical_id, pending.critical_reason) == (newest.pk, "second critical")
    assert pending.soonest_reason == "a warning"
    assert decision_url(newest.pk) == f"/oversight/interrupts/{newest.pk}/"


@pytest.fixture
def console_pushes(monkeypatch) -> Iterator[list[str]]:
    """The headers common.push sends to every console (the console group; not the alerts
    it also sends there, such as a decided interrupt's retired alert), from a clean slate: no
    coalescing guard held, nothing pushed before, one console open (a Daphne process counts
    its socket: a group nobody watches is not rendered for)."""
    client = redis_client()
    key = "pending-decisions"
    client.delete(f"push-guard:{key}", f"push-trailing:{key}", LAST_PUSHED)
    watching = push.subscribers_key(push.CONSOLE_GROUP)
    client.hset(watching, "test-console:1", push.subscribers_field(1))
    push._subscribers.clear()
    sent: list[str] = []

    def record(group: str, html: str) -> None:
        client.delete(f"push-guard:{key}")  # each step of the test is its own quiet spell
        if group == push.CONSOLE_GROUP and 'id="pending-decisions"' in html:
            sent.append(html)

    monkeypatch.setattr(push, "push_html", record)
    yield sent
    client.hdel(watching, "test-console:1")
    push._subscribers.clear()


def test_the_header_is_pushed_when_an_interrupt_is_raised_and_when_it_is_decided(
    console_pushes, django_capture_on_commit_callbacks
):
    otto = person("otto", "operator")
    with django_capture_on_commit_callbacks(execute=True):
        raised = _interrupt("dose over the limit", deadline_s=600, severity="critical")

    [html] = console_pushes
    assert re.match(r'<div id="pending-decisions"[^>]* hx-swap-oob="true"', html)
    assert "1 pending" in html and f'href="{decision_url(raised.pk)}"' in html
    assert f'data-notify="interrupt-{raised.pk}"' in html
    assert 'data-notify-body="dose over the limit"' in html
    assert "otto" not in html and "csrf" not in html  # the same for every viewer

    with django_capture_on_commit_callbacks(execute=True):
        interrupt_decide(interrupt_id=raised.pk, actor=otto, decision="approve")

    assert len(console_pushes) == 2
    assert "No decisions pending" in console_pushes[1]
    assert "data-notify" not in console_pushes[1]


def test_an_overview_push_that_changes_no_decision_sends_no_header(
    console_pushes, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        _interrupt("dose over the limit", deadline_s=600)
    assert len(console_pushes) == 1

    # A frame starting or ending pushes the overview; the header has not changed.
    with django_capture_on_commit_callbacks(execute=True):
        push.overview_push()
        run_start(domain="ward", blueprint="ward-dose", input={})

    assert len(console_pushes) == 1


def test_a_group_nobody_watches_is_not_rendered_for(
    console_pushes, django_capture_on_commit_callbacks, monkeypatch
):
    """The header is pushed to every console; with none open, it is not even rendered."""
    rendered: list[int] = []
    monkeypatch.setattr("console.pending.pending_html", lambda: rendered.append(1) or "<p></p>")
    redis_client().hdel(push.subscribers_key(push.CONSOLE_GROUP), "test-console:1")
    push._subscribers.clear()

    with django_capture_on_commit_callbacks(execute=True):
        _interrupt("dose over the limit", deadline_s=600)

    assert rendered == [] and console_pushes == []
