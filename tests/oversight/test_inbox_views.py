"""The approval inbox (oversight/views/inbox.py) through Django's test client: who sees what,
who may decide, and what a bad payload or a lost race answers."""

from __future__ import annotations

import pytest
from django.test import Client

from loops import services
from loops.models import LoopRun
from oversight import fragments, selectors
from oversight.models import Interrupt
from oversight.services import interrupts
from tests.conftest import drive, signed_in, with_role

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State
INBOX = "/oversight/inbox/"
HTMX = {"HX-Request": "true"}


# Here a persona is a client of its own, signed in as tests/conftest.py's persona: a test
# may act as two of them at once.


@pytest.fixture
def operator(operator) -> Client:
    return signed_in(operator)


@pytest.fixture
def viewer(viewer) -> Client:
    return signed_in(viewer)


@pytest.fixture
def pending() -> Interrupt:
    """ward-dose proposes 1,600 mg, over its 1,000 mg limit: a policy interrupt."""
    run = drive(services.run_start(domain="ward", blueprint="ward-dose", input={}))
    return Interrupt.objects.get(run__root_id=run.root_id, status=Interrupt.Status.PENDING)


def decide_url(interrupt: Interrupt) -> str:
    return f"/oversight/inbox/{interrupt.pk}/decide"


def test_a_viewer_sees_the_card_but_no_controls(viewer, pending):
    page = viewer.get(INBOX)

    assert page.status_code == 200
    html = page.content.decode()
    assert f'id="interrupt-{pending.pk}-card"' in html
    assert pending.reason in html
    assert "dose_mg" in html  # the proposal
    assert f'datetime="{pending.deadline_at.isoformat()}"' in html  # the countdown
    assert f"/loops/runs/{pending.run_id}/" in html
    assert "<form" not in html.split('id="inbox-list"')[1]
    assert decide_url(pending) not in html


def test_a_list_of_objects_in_a_proposal_reads_as_a_table(viewer, pending):
    """Issue 17: a ranking of suppliers is rows and labelled columns, its JSON only behind
    the Raw JSON toggle."""
    suppliers = [{"name": "Kessler", "risk": 0.82}, {"name": "Ostrava", "risk": 0.31}]
    Interrupt.objects.filter(pk=pending.pk).update(proposal={"suppliers": suppliers})

    html = viewer.get(INBOX).content.decode()

    field = html.split('data-field="suppliers"')[1].split("</dd>")[0]
    assert "<dt>Suppliers</dt><dd>2 items" in field
    assert '<th scope="col">Name</th><th scope="col">Risk</th>' in field
    assert "<tr><td>Kessler</td><td>0.82</td></tr><tr><td>Ostrava</td><td>0.31</td></tr>" in field
    assert "&quot;" not in field  # no JSON in the field itself
    assert f'aria-label="Suppliers of decision {pending.pk}"' in field


def test_an_operator_sees_the_decision_form(operator, pending):
    html = operator.get(INBOX).content.decode()

    assert f'hx-post="{decide_url(pending)}"' in html
    assert 'value="approve"' in html and 'value="modify"' in html
    assert "&quot;dose_mg&quot;: 1600" in html  # the textarea, prefilled with the proposal


def test_the_inbox_orders_by_deadline_then_severity(pending):
    assert [i.pk for i in selectors.inbox_pending()] == [pending.pk]


def test_a_viewer_gets_403_when_posting_anyway_and_nothing_changes(viewer, pending):
    answer = viewer.post(decide_url(pending), {"decision": "approve"}, headers=HTMX)

    assert answer.status_code == 403
    pending.refresh_from_db()
    assert pending.is_pending
    assert viewer.post(f"/oversight/inbox/{pending.pk}/claim").status_code == 403


def test_someone_without_a_role_cannot_see_the_inbox(django_user_model):
    client = Client()
    client.force_login(django_user_model.objects.create_user("nobody"))
    assert client.get(INBOX).status_code == 403


def test_a_payload_that_is_not_json_shows_the_error_and_changes_nothing(operator, pending):
    answer = operator.post(
        decide_url(pending), {"decision": "modify", "payload": "{dose: 9"}, headers=HTMX
    )

    assert answer.status_code == 200
    html = answer.content.decode()
    assert "not valid JSON" in html
    assert f'id="interrupt-{pending.pk}-controls"' in html
    assert "{dose: 9" in html  # what was typed comes back
    pending.refresh_from_db()
    assert pending.is_pending


def test_a_payload_against_the_schema_shows_the_error(operator, pending):
    answer = operator.post(
        decide_url(pending),
        {"decision": "modify", "payload": '{"dose_mg": "lots"}'},
        headers=HTMX,
    )

    assert answer.status_code == 200
    assert "does not match the proposal" in answer.content.decode()
    pending.refresh_from_db()
    assert pending.is_pending


def test_an_operator_approves_and_the_item_leaves_the_list(operator, pending):
    answer = operator.post(decide_url(pending), {"decision": "approve"}, headers=HTMX)

    assert answer.status_code == 200
    html = answer.content.decode()
    assert f'<div id="interrupt-{pending.pk}" hx-swap-oob="delete">' in html
    pending.refresh_from_db()
    assert (pending.status, pending.decision) == (Interrupt.Status.DECIDED, "approve")
    # Every open inbox (this one included) drops it and shows it decided, by push.
    pushed = interrupts.interrupt_update_html(pending.pk)
    assert f'<div id="interrupt-{pending.pk}" hx-swap-oob="delete">' in pushed
    assert 'hx-swap-oob="afterbegin:#inbox-decided"' in pushed
    assert "approve by otto" in pushed
    assert pushed.count(f'id="interrupt-{pending.pk}-card"') == 1  # once, as decided
    assert "<form" not in pushed and "csrf" not in pushed


def test_a_modification_is_decided_with_the_payload(operator, pending):
    answer = operator.post(
        decide_url(pending),
        {"decision": "modify", "payload": '{"dose_mg": 950}', "comment": "cap it"},
    )

    assert answer.status_code == 302  # not htmx: back to the inbox
    pending.refresh_from_db()
    assert (pending.decision, pending.payload, pending.comment) == (
        "modify",
        {"dose_mg": 950},
        "cap it",
    )


def test_a_lost_race_shows_who_decided(django_user_model, operator, pending):
    winner = with_role(django_user_model.objects.create_user("wanda"), "operator")
    interrupts.interrupt_decide(interrupt_id=pending.pk, actor=winner, decision="approve")

    answer = operator.post(
        decide_url(pending), {"decision": "reject", "comment": "too high"}, headers=HTMX
    )

    assert answer.status_code == 200
    assert "already decided by wanda" in answer.content.decode()
    assert "already_decided" in answer.headers["HX-Trigger"]
    pending.refresh_from_db()
    assert (pending.decision, pending.decided_by) == ("approve", winner)


def test_a_claim_shows_who_is_reviewing(operator, pending):
    answer = operator.post(f"/oversight/inbox/{pending.pk}/claim", headers=HTMX)

    assert answer.status_code == 200
    card = fragments.interrupt_card(selectors.interrupt_get_with_history(pending.pk))
    assert "otto is reviewing" in card


def test_a_pushed_item_carries_the_same_controls_for_everyone(pending):
    """No request per browser per interrupt: the controls come with the push, hidden by CSS
    from those who may not decide (who are refused by the server regardless)."""
    raised = fragments.interrupt_raised(selectors.interrupt_with_run_history(pending))
    assert 'hx-swap-oob="afterbegin:#inbox-list"' in raised
    assert "<form" in raised and "decide-only" in raised
    assert "csrf" not in raised and "hx-trigger" not in raised


def test_the_page_shows_controls_to_deciders_only(operator, viewer, pending):
    assert 'class="inbox-decide"' in operator.get("/oversight/inbox/").content.decode()
    page = viewer.get("/oversight/inbox/").content.decode()
    assert f'id="interrupt-{pending.pk}"' in page and 'class="inbox-decide"' not in page
    assert "can-decide" in operator.get("/").content.decode()
    assert "can-decide" not in viewer.get("/").content.decode()
