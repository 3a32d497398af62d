"""Decisions a person can read (issue 17): the limit an interrupt records, the decision page
(oversight/views/decision.py) by role, the inbox card's readable proposal and the inbox's
domain filter."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from loops import services
from loops.models import Domain, LoopRun
from oversight.models import Interrupt
from oversight.services import interrupts
from tests.conftest import drive, signed_in

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
HTMX = {"HX-Request": "true"}


def _pending(blueprint: str) -> Interrupt:
    run = drive(services.run_start(domain="ward", blueprint=blueprint, input={}))
    return Interrupt.objects.get(run__root_id=run.root_id, status=Interrupt.Status.PENDING)


def page_url(interrupt: Interrupt) -> str:
    return f"/oversight/interrupts/{interrupt.pk}/"


@pytest.fixture
def case() -> Interrupt:
    """ward-dose-case: 1,450 mg over the result's own max_dose_mg of 1,000 mg."""
    return _pending("ward-dose-case")


@pytest.fixture
def operator(operator) -> Client:
    return signed_in(operator)


@pytest.fixture
def viewer(viewer) -> Client:
    return signed_in(viewer)


@pytest.fixture
def outsider(outsider) -> Client:
    return signed_in(outsider)


# --- the limit, recorded by the engine -------------------------------------------------------


def test_a_limit_named_by_another_field_is_recorded_with_that_field(case):
    assert case.limit == {
        "field": "dose_mg",
        "value": 1450,
        "limit": 1000,
        "limit_field": "max_dose_mg",
    }
    assert case.reason == "dose_mg = 1450 is over max_dose_mg = 1000"
    assert (case.source, case.severity) == ("policy", "critical")


def test_a_number_limit_is_recorded_and_the_reason_keeps_its_words():
    pending = _pending("ward-dose")

    assert pending.limit == {"field": "dose_mg", "value": 1600, "limit": 1000}
    assert pending.reason == "dose_mg = 1600 is over the limit 1000"


def test_an_agents_escalation_records_no_limit_unless_it_gives_one():
    pending = _pending("ward-interactions")

    assert pending.limit is None


def test_the_api_shows_the_limit(operator, case):
    answer = operator.get(f"/api/v1/interrupts/{case.pk}")

    assert answer.status_code == 200, answer.content
    assert answer.json()["limit"]["limit_field"] == "max_dose_mg"


# --- the card ------------------------------------------------------------------------------


def test_the_inbox_card_reads_as_fields_with_the_limit_in_words_and_opens_the_page(viewer, case):
    html = viewer.get("/oversight/inbox/").content.decode()

    assert "Dose 1,450 mg is over the 1,000 mg maximum for this patient" in html
    assert "<dt>Dose</dt><dd>1,450 mg</dd>" in html
    assert '<details class="proposal-raw"><summary>Raw JSON</summary>' in html
    assert f'href="{page_url(case)}" class="interrupt-open" data-open' in html
    assert f'data-decision="{case.pk}"' in html


def test_the_controls_say_what_each_choice_does(operator, case):
    html = operator.get("/oversight/inbox/").content.decode()

    assert "Dose 1,450 mg goes ahead as proposed, over its limit." in html
    assert "the step runs again with your comment as feedback" in html
    assert f'aria-describedby="interrupt-{case.pk}-does-modify"' in html
    assert 'data-schema="{&quot;type&quot;:&quot;object&quot;' in html


# --- the decision page ---------------------------------------------------------------------


def test_an_operator_gets_the_page_with_controls_stack_and_history(operator, case):
    earlier = _pending("ward-dose-case")  # a second run of the same task, decided below
    interrupts.interrupt_decide(
        interrupt_id=earlier.pk,
        actor=_otto(),
        decision="reject",
        payload=None,
        comment="too much for her kidneys",
    )

    answer = operator.get(page_url(case))

    assert answer.status_code == 200
    html = answer.content.decode()
    assert f'id="interrupt-{case.pk}-card"' in html and f'id="interrupt-{case.pk}-controls"' in html
    assert f'action="/oversight/inbox/{case.pk}/decide"' in html
    assert "Dose 1,450 mg is over the 1,000 mg maximum for this patient" in html
    # The blueprint's own words for what a rejection leads to, beside the reject button.
    assert "the doser then proposes no more than the maximum" in html
    assert f'<a href="/loops/runs/{case.run_id}/" aria-current="true">' in html
    assert "too much for her kidneys" in html  # the task's history
    assert html.count(f'href="{page_url(earlier)}"') == 2  # same task, and the same agent's


def test_the_stack_nests_the_frames_and_marks_this_one(operator):
    pending = _pending("ward-round")  # ward-round calls ward-check, whose agent escalates
    root = LoopRun.objects.get(pk=pending.run.root_id)

    html = operator.get(page_url(pending)).content.decode()

    tree = html.split('class="stack-tree"')[1]
    assert tree.index(f"/loops/runs/{root.pk}/") < tree.index(f"/loops/runs/{pending.run_id}/")
    assert f'<a href="/loops/runs/{pending.run_id}/" aria-current="true">' in tree
    assert tree.count('aria-current="true"') == 1


def test_a_viewer_reads_the_page_without_controls_and_cannot_post(viewer, case):
    answer = viewer.get(page_url(case))

    assert answer.status_code == 200
    html = answer.content.decode()
    assert "Dose 1,450 mg is over" in html
    assert "<form" not in html.split('id="interrupt-')[1].split("</main>")[0]
    refused = viewer.post(f"/oversight/inbox/{case.pk}/decide", {"decision": "approve"})
    assert refused.status_code == 403
    case.refresh_from_db()
    assert case.is_pending


def test_an_outsider_gets_403_and_a_stranger_the_login(outsider, case):
    assert outsider.get(page_url(case)).status_code == 403
    answer = Client().get(page_url(case))
    assert answer.status_code == 302 and "/login" in answer["Location"]


def test_an_unknown_interrupt_is_404(operator):
    assert operator.get("/oversight/interrupts/999999/").status_code == 404


def test_the_page_reads_in_a_bounded_number_of_queries(operator, case):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert operator.get(page_url(case)).status_code == 200
        return len(captured)

    first = queries()
    for _ in range(3):  # more history of the same task and agent
        interrupts.interrupt_decide(
            interrupt_id=_pending("ward-dose-case").pk,
            actor=_otto(),
            decision="approve",
            payload=None,
            comment="",
        )

    assert queries() == first <= 25


def test_a_modify_that_breaks_the_schema_is_refused_naming_the_field(operator, case):
    answer = operator.post(
        f"/oversight/inbox/{case.pk}/decide",
        {"decision": "modify", "payload": '{"dose_mg": -5, "max_dose_mg": 1000}'},
    )

    assert answer.status_code == 400
    assert "dose_mg" in answer.content.decode()
    case.refresh_from_db()
    assert case.is_pending


# --- the inbox, by domain ------------------------------------------------------------------


def test_the_inbox_lists_one_domains_pending_decisions(viewer, case):
    html = viewer.get("/oversight/inbox/?domain=ward").content.decode()

    assert "Approval inbox: Ward" in html
    assert f'id="interrupt-{case.pk}"' in html


def test_another_domains_inbox_leaves_them_out(viewer, case):
    other = next(slug for slug in _domain_slugs() if slug != "ward")  # any other declared one
    html = viewer.get(f"/oversight/inbox/?domain={other}").content.decode()

    assert f'id="interrupt-{case.pk}"' not in html


def test_an_unknown_domain_is_a_404_naming_it(viewer):
    answer = viewer.get("/oversight/inbox/?domain=nowhere")

    assert answer.status_code == 404
    assert "There is no domain &#x27;nowhere&#x27;" in answer.content.decode()


def _domain_slugs() -> list[str]:
    return list(Domain.objects.values_list("slug", flat=True))


def _otto():
    """The operator fixture's user (the fixture itself is his client here)."""
    return get_user_model().objects.get(username="otto")
