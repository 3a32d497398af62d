"""Decisions that need more than one person (issue 18; CONCEPTS 37, 39, 40; DESIGN.md H2, H5):
a dose over twice the limit goes ahead only once two different people approve it; any one
reject ends it; a modify starts the count again on the modified proposal; the same person
twice is refused; under concurrency there is exactly one outcome, and whatever comes after
it gets a 409 naming it. Through the real API and the inbox's htmx view, on the ward loops
of tests/oversight/decl_interrupts.py (ward-dose-quorum: 2,400 mg at 30 mg/kg needs two
people, 1,600 mg at 20 mg/kg one)."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from common.refusals import Refused
from loops.declare import BLUEPRINTS, DeclarationError, blueprint
from loops.models import Event, LoopRun
from loops.specs import Escalate, Exits, Phase, Policy
from oversight import presenting
from oversight.models import AuditEvent, Interrupt, InterruptApproval
from oversight.services.copies import copy_approved
from oversight.services.deadlines import interrupts_expire_overdue
from oversight.services.interrupts import interrupt_decide, interrupt_update_html
from oversight.services.quorum import approvals_needed
from realms.decisions import settled_view
from tests.conftest import person, signed_in
from tests.oversight.test_interrupts import decide, interrupted, race, step_until

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State
REALM = settings.REALM_SLUG
HTMX = {"HX-Request": "true"}


def two_person(**input) -> tuple[LoopRun, Interrupt]:
    """A ward-dose-quorum run waiting on its 2,400 mg proposal (over twice the 1,000 mg limit)."""
    run, interrupt = interrupted("ward-dose-quorum", mg_per_kg=30, **input)
    assert (interrupt.proposal["dose_mg"], interrupt.approvals_needed) == (2400, 2)
    return run, interrupt


def audited(interrupt: Interrupt, verb: str) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(target_type="interrupt", target_id=str(interrupt.pk), verb=verb)
    )


def settled(interrupt: Interrupt) -> list[AuditEvent]:
    """The audit rows that settled it: exactly one, whatever the race (H2)."""
    rows = AuditEvent.objects.filter(target_type="interrupt", target_id=str(interrupt.pk))
    return [row for row in rows if (row.after or {}).get("status") == "decided"]


# --- Two people, or one (the condition is the policy's) ----------------------------------------


def test_it_waits_for_a_second_person_and_lets_the_second_approval_decide():
    run, interrupt = two_person()
    alice, bob = person("alice", "operator"), person("bob", "admin")

    first = decide(signed_in(alice), interrupt, decision="approve", comment="checked the chart")

    assert first.status_code == 200, first.json()
    body = first.json()
    assert (body["status"], body["decision"], body["approvals_needed"]) == ("pending", "", 2)
    assert [(a["by"], a["role"]) for a in body["approvals"]] == [("alice", "operator")]
    run.refresh_from_db()
    assert run.state == State.INTERRUPTED  # nothing goes ahead on one approval
    [row] = audited(interrupt, "interrupt.approved")
    assert (row.actor_name, row.note, row.data["approval"]) == (
        "alice",
        "checked the chart",
        "1 of 2",
    )
    assert (row.before["approvals"], row.after["approvals"]) == (0, 1)
    # The card as pushed after the approval: who approved, how many more, and a button that
    # says the next approval decides.
    html = interrupt_update_html(interrupt.pk)
    assert "Needs 2 approvals" in html and "approved by alice (operator) at" in html
    assert "1 more needed" in html
    assert f'id="interrupt-{interrupt.pk}-approve-label" class="approve-label" hx-swap-oob' in html
    assert "Approve: completes the quorum (2 of 2)" in html

    second = decide(signed_in(bob), interrupt, decision="approve")

    assert second.status_code == 200, second.json()
    body = second.json()
    assert (body["status"], body["decision"], body["decided_by"]) == ("decided", "approve", "bob")
    assert [(a["by"], a["role"]) for a in body["approvals"]] == [
        ("alice", "operator"),
        ("bob", "admin"),
    ]
    [decided] = settled(interrupt)
    assert decided.actor_name == "bob"
    assert [a["by"] for a in decided.data["approvals"]] == ["alice", "bob"]
    run = step_until(run, State.SUCCEEDED)
    assert (run.state, run.result["dose_mg"]) == (State.SUCCEEDED, 2400)


def test_one_person_decides_a_dose_over_the_limit_but_not_twice_over_it():
    _, interrupt = interrupted("ward-dose-quorum", mg_per_kg=20)  # 1,600 mg: over, not twice
    assert interrupt.approvals_needed == 1

    answer = decide(signed_in(person("alice", "operator")), interrupt, decision="approve")

    assert (answer.status_code, answer.json()["status"]) == (200, "decided")
    assert answer.json()["approvals"] == []
    assert "Needs" not in interrupt_update_html(interrupt.pk)


def test_it_refuses_a_second_approval_by_the_same_person_and_changes_nothing():
    _, interrupt = two_person()
    alice = signed_in(person("alice", "operator"))
    assert decide(alice, interrupt, decision="approve").status_code == 200
    approval = InterruptApproval.objects.get(interrupt=interrupt)

    again = decide(alice, interrupt, decision="approve")

    assert again.status_code == 409
    assert again.json() == {
        "error": "already_approved",
        "detail": f"alice already approved this proposal of interrupt {interrupt.pk} at "
        f"{approval.at.isoformat()}; 1 more approval is needed by someone else.",
    }
    interrupt.refresh_from_db()
    assert interrupt.status == Interrupt.Status.PENDING
    assert InterruptApproval.objects.filter(interrupt=interrupt).count() == 1
    assert len(audited(interrupt, "interrupt.approved")) == 1


def test_any_one_reject_ends_it_and_a_later_approval_is_told_who_rejected():
    run, interrupt = two_person()
    assert (
        decide(signed_in(person("alice", "operator")), interrupt, decision="approve").status_code
        == 200
    )

    no = decide(signed_in(person("carol", "operator")), interrupt, decision="reject", comment="no")

    assert (no.status_code, no.json()["status"], no.json()["decision"]) == (
        200,
        "decided",
        "reject",
    )
    late = decide(signed_in(person("bob", "operator")), interrupt, decision="approve")
    interrupt.refresh_from_db()
    assert late.status_code == 409
    assert late.json()["detail"] == (
        f"Interrupt {interrupt.pk} was already decided by carol in realm {REALM} at "
        f"{interrupt.decided_at.isoformat()} (reject)."
    )
    # The partial approval stays in the audit (H5), beside the reject that settled it.
    assert [r.actor_name for r in audited(interrupt, "interrupt.approved")] == ["alice"]
    assert [r.actor_name for r in settled(interrupt)] == ["carol"]
    run = step_until(run, State.SUCCEEDED)
    assert run.result["dose_mg"] == 900  # the doser, told no, stays under the limit


def test_a_late_decision_after_a_quorum_is_told_who_approved():
    _, interrupt = two_person()
    assert (
        decide(signed_in(person("alice", "operator")), interrupt, decision="approve").status_code
        == 200
    )
    assert (
        decide(signed_in(person("bob", "operator")), interrupt, decision="approve").status_code
        == 200
    )

    late = decide(signed_in(person("carol", "operator")), interrupt, decision="reject", comment="x")

    interrupt.refresh_from_db()
    alice, bob = InterruptApproval.objects.filter(interrupt=interrupt).order_by("at", "id")
    assert late.status_code == 409
    assert late.json()["detail"] == (
        f"Interrupt {interrupt.pk} was already decided by bob in realm {REALM} at "
        f"{interrupt.decided_at.isoformat()} (approve). Approved by alice (operator) at "
        f"{alice.at.isoformat()} and bob (operator) at {bob.at.isoformat()}."
    )


# --- A modify starts the count again -------------------------------------------------------------


def test_a_modify_replaces_the_proposal_and_starts_the_count_again():
    run, interrupt = two_person()
    alice = signed_in(person("alice", "operator"))
    bob = signed_in(person("bob", "operator"))
    assert decide(alice, interrupt, decision="approve").status_code == 200

    changed = decide(bob, interrupt, decision="modify", payload={"dose_mg": 1800}, version=1)

    assert changed.status_code == 200, changed.json()
    body = changed.json()
    assert (body["status"], body["proposal"], body["proposal_version"]) == (
        "pending",
        {"dose_mg": 1800},
        2,
    )
    assert [a["by"] for a in body["approvals"]] == ["bob"]  # alice's was of the old proposal
    [row] = audited(interrupt, "interrupt.modified")
    assert (row.actor_name, row.before["proposal"]["dose_mg"], row.after["proposal"]) == (
        "bob",
        2400,
        {"dose_mg": 1800},
    )
    html = interrupt_update_html(interrupt.pk)
    assert "bob modified the proposal at" in html and "1 more needed" in html
    # Alice's form still shows 2,400 mg: her approval of it is refused, naming the change.
    stale = decide(alice, interrupt, decision="approve", version=1)
    assert stale.status_code == 409
    assert stale.json()["error"] == "proposal_changed"
    assert "modified by bob at" in stale.json()["detail"]
    assert decide(bob, interrupt, decision="approve").json()["error"] == "already_approved"

    done = decide(alice, interrupt, decision="approve", version=2)

    assert (done.status_code, done.json()["status"], done.json()["decision"]) == (
        200,
        "decided",
        "approve",
    )
    run = step_until(run, State.SUCCEEDED)
    assert run.result["dose_mg"] == 1800  # the modified proposal, approved by two people


def test_a_modify_that_does_not_match_the_schema_is_refused_and_changes_nothing():
    _, interrupt = two_person()

    bad = decide(
        signed_in(person("bob", "operator")), interrupt, decision="modify", payload={"dose_mg": -1}
    )

    assert (bad.status_code, bad.json()["error"]) == (400, "invalid_payload")
    interrupt.refresh_from_db()
    assert (interrupt.proposal["dose_mg"], interrupt.proposal_version) == (2400, 1)
    assert not InterruptApproval.objects.filter(interrupt=interrupt).exists()


# --- Different groups, when the policy says so ---------------------------------------------------


def test_it_asks_each_approval_of_a_different_group():
    _, interrupt = interrupted("ward-dose-two-roles")
    assert (interrupt.approvals_needed, interrupt.approvers_from) == (2, ["operator", "admin"])
    assert (
        decide(signed_in(person("otto", "operator")), interrupt, decision="approve").status_code
        == 200
    )

    same = decide(signed_in(person("olaf", "operator")), interrupt, decision="approve")

    assert (same.status_code, same.json()["error"]) == (409, "group_already_approved")
    assert "must come from admin" in same.json()["detail"]
    done = decide(signed_in(person("ada", "admin")), interrupt, decision="approve")
    assert (done.status_code, done.json()["status"]) == (200, "decided")
    assert [(a["by"], a["role"]) for a in done.json()["approvals"]] == [
        ("otto", "operator"),
        ("ada", "admin"),
    ]


# --- Exactly one outcome under concurrency (H2) ---------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_approvals_and_a_concurrent_reject_give_exactly_one_outcome():
    run, interrupt = two_person()
    alice, bob, carol = (person(n, "operator") for n in ("alice", "bob", "carol"))
    bodies = [
        {"decision": "approve"},
        {"decision": "approve"},
        {"decision": "reject", "comment": "too much"},
    ]

    answers = race(
        interrupt, [(signed_in(u), b) for u, b in zip((alice, bob, carol), bodies, strict=True)]
    )

    interrupt.refresh_from_db()
    codes = [a.status_code for a in answers]
    assert interrupt.status == Interrupt.Status.DECIDED
    assert len(settled(interrupt)) == 1
    assert Event.objects.filter(run=run, type="interrupt.decided").count() == 1
    said = f"already decided by {interrupt.decided_by.username} in realm {REALM} at"
    if interrupt.decision == "approve":  # both approvals came before the reject
        assert codes == [200, 200, 409]
        assert {a.by for a in InterruptApproval.objects.filter(interrupt=interrupt)} == {
            "alice",
            "bob",
        }
        assert said in answers[2].json()["detail"]
    else:  # the reject came first, or second: it decided; the approvals after it lost
        assert (interrupt.decision, interrupt.decided_by.username) == ("reject", "carol")
        assert codes[2] == 200 and sorted(codes[:2]) in ([200, 409], [409, 409])
        for answer in answers[:2]:
            if answer.status_code == 409:
                assert said in answer.json()["detail"]
    run = step_until(run, State.SUCCEEDED)
    assert run.result["dose_mg"] == (2400 if interrupt.decision == "approve" else 900)


# --- The deadline still applies the default; the partial approvals stay in the audit -----------


def test_the_deadline_applies_the_default_when_the_quorum_is_not_reached():
    _, interrupt = two_person()
    assert (
        decide(signed_in(person("alice", "operator")), interrupt, decision="approve").status_code
        == 200
    )

    assert interrupts_expire_overdue(now=interrupt.deadline_at + timedelta(seconds=1)) == 1

    interrupt.refresh_from_db()
    assert (interrupt.status, interrupt.decision) == ("expired", "reject")
    assert [r.actor_name for r in audited(interrupt, "interrupt.approved")] == ["alice"]
    assert "approved by alice (operator)" in interrupt_update_html(interrupt.pk)


# --- The console: the card, the button, and the htmx answer -----------------------------------


def test_the_inbox_shows_the_quorum_and_the_htmx_answer_keeps_the_controls():
    _, interrupt = two_person()
    alice = signed_in(person("alice", "operator"))
    page = alice.get("/oversight/inbox/").content.decode()
    assert "Needs 2 approvals" in page and "none yet" in page
    assert "Approve (1 of 2; it waits for 1 more)" in page
    assert "once 2 different people approve" in page

    answer = alice.post(
        f"/oversight/inbox/{interrupt.pk}/decide",
        {"decision": "approve", "version": "1"},
        headers=HTMX,
    )

    html = answer.content.decode()
    assert answer.status_code == 200
    assert f'id="interrupt-{interrupt.pk}-controls"' in html  # still pending: the form stays
    assert "Approve: completes the quorum (2 of 2)" in html
    assert InterruptApproval.objects.filter(interrupt=interrupt, by="alice").exists()
    detail = alice.get(f"/oversight/interrupts/{interrupt.pk}/").content.decode()
    assert "approved by alice (operator) at" in detail


def test_the_api_lists_the_approvals_of_a_pending_interrupt(viewer):
    _, interrupt = two_person()
    decide(signed_in(person("alice", "operator")), interrupt, decision="approve")

    listed = signed_in(viewer).get("/api/v1/interrupts?status=pending").json()["items"]

    [item] = [i for i in listed if i["id"] == interrupt.pk]
    assert (item["approvals_needed"], item["proposal_version"]) == (2, 1)
    assert [(a["by"], a["role"]) for a in item["approvals"]] == [("alice", "operator")]


def test_the_openapi_document_states_the_approvals_and_the_version(client):
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]

    interrupt = schemas["InterruptOut"]
    assert {"approvals_needed", "approvals", "proposal_version"} <= set(interrupt["required"])
    assert set(schemas["ApprovalOut"]["properties"]) == {"by", "role", "at"}
    assert "version" in schemas["DecisionIn"]["properties"]
    assert "version" not in schemas["DecisionIn"].get("required", [])


# --- manage.py decide -----------------------------------------------------------------------------


def test_the_decide_command_says_how_many_more_approvals_are_needed():
    _, interrupt = two_person()
    person("alice", "operator")
    out = StringIO()

    call_command("decide", str(interrupt.pk), "approve", "--user", "alice", stdout=out)

    assert out.getvalue().strip() == (
        f"Interrupt {interrupt.pk} approved by alice: 1 of 2 approvals; "
        "1 more needed, from other people."
    )
    with pytest.raises(CommandError, match="alice already approved this proposal"):
        call_command("decide", str(interrupt.pk), "approve", "--user", "alice", stdout=out)


# --- The declaration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "escalate",
    [
        Escalate(approvals=0),
        Escalate(approvals=21),
        Escalate(approvals=3, approvers_from=("operator", "admin")),
    ],
)
def test_it_refuses_a_quorum_that_cannot_be_met(escalate):
    with pytest.raises(DeclarationError, match=r"Escalate\(approvals=…\) must be 1..20"):
        blueprint(
            "ward-bad-quorum",
            kind="main",
            domain="ward",
            policy=Policy(exits=Exits(max_iterations=1), escalation=escalate),
            phases=[Phase("x", task_type="ward.dose", capabilities=("dosing",))],
        )


def test_the_demo_asks_two_people_for_a_dose_over_twice_the_maximum():
    escalation = BLUEPRINTS["dosage-calculation"].policy.escalation
    under = {"dose_mg": 3750, "max_dose_mg": 2000}  # over the maximum, not twice over
    over = {"dose_mg": 4250, "max_dose_mg": 2000}

    assert (approvals_needed(escalation, under), approvals_needed(escalation, over)) == (1, 2)


# --- Across realms (DESIGN.md H9): a peer's operator is one person, name@realm --------------------


def test_a_peer_realms_operator_counts_as_one_person_named_with_their_realm():
    _, interrupt = two_person()

    pending = interrupt_decide(
        interrupt_id=interrupt.pk, actor=None, decision="approve", on_behalf=("amy", "a")
    )

    # What the owner answers the peer's loopstacks/Decide: still pending, with the approvals.
    view = settled_view(pending)
    assert (view["status"], view["approvals_needed"], view["version"]) == ("pending", 2, 1)
    assert [(a["by"], a["role"]) for a in view["approvals"]] == [("amy@a", "realm a")]
    [row] = audited(interrupt, "interrupt.approved")
    assert (row.actor_name, row.data["realm"], row.data["person"]) == ("amy@a", "a", "amy")
    with pytest.raises(Refused, match="amy@a already approved this proposal"):
        interrupt_decide(
            interrupt_id=interrupt.pk, actor=None, decision="approve", on_behalf=("amy", "a")
        )

    done = interrupt_decide(
        interrupt_id=interrupt.pk, actor=person("bob", "operator"), decision="approve"
    )

    assert (done.status, done.decision) == ("decided", "approve")
    assert [a["by"] for a in settled_view(done)["approvals"]] == ["amy@a", "bob"]


def test_a_copy_shows_the_approvals_the_owning_realm_answered(operator):
    run, original = two_person()
    copy = Interrupt.objects.create(
        run=run,
        source="policy",
        reason=original.reason,
        proposal=original.proposal,
        deadline_at=original.deadline_at,
        approvals_needed=2,
        remote={"realm": "b", "id": 99, "url": ""},
    )
    answer = {
        "status": "pending",
        "approvals_needed": 2,
        "approvals": [{"by": "otto", "role": "realm a", "at": "2026-12-06T10:02:03+00:00"}],
        "proposal": {"dose_mg": 2400},
        "version": 1,
    }

    copy_approved(interrupt_id=copy.pk, answer=answer, actor=operator, decision="approve")

    copy.refresh_from_db()
    assert copy.is_pending
    assert [(a.by, a.role) for a in copy.current_approvals] == [("otto", "realm a")]
    [row] = audited(copy, "interrupt.approved")
    assert (row.actor_name, row.data["realm"], row.after["approvals"]) == ("otto", "b", 1)
    assert "approved by otto (realm a) at" in interrupt_update_html(copy.pk)


# --- The words ------------------------------------------------------------------------------------


def test_the_button_says_whether_an_approval_completes_the_quorum():
    assert presenting.approve_label(needed=1, given=0) == "Approve"
    assert presenting.approve_label(needed=2, given=0) == "Approve (1 of 2; it waits for 1 more)"
    assert presenting.approve_label(needed=2, given=1) == "Approve: completes the quorum (2 of 2)"
    assert presenting.approve_label(needed=3, given=1) == "Approve (2 of 3; it waits for 1 more)"


def test_the_choices_say_what_one_approval_and_a_modify_do_under_a_quorum():
    does = presenting.choices(
        proposal={"dose_mg": 2400},
        schema=None,
        limit={"field": "dose_mg", "value": 2400, "limit": 1000},
        default_action="reject",
        approvals=2,
    )

    assert does.approve == (
        "Dose mg 2,400 goes ahead as proposed, over its limit, once 2 different people approve."
    )
    assert does.reject.startswith("Any one reject ends it. Nothing of it is used")
    assert does.modify.endswith(
        "; the count starts again, yours the first of the 2 approvals they need."
    )
