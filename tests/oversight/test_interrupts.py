"""Interrupts (DESIGN.md H2, CONCEPTS 37, 39, 40): raised by agents and policies, decided by
exactly one person through the real API, applied by the run's next step, and expired into
their default with an admin notification. Runs are stepped in this process with
engine.advance() (the ward loops of tests/oversight/decl_interrupts.py), and once by the
session's real Celery worker."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.utils import timezone

from console.auth import token_create
from loops import engine, services
from loops.models import Agent, Domain, Event, LoopRun
from oversight import selectors, tasks
from oversight.models import Alert, AuditEvent, CircuitBreaker, Halt, Interrupt, Notification
from oversight.services.alerts import notification_deliver
from oversight.services.deadlines import interrupts_expire_overdue, interrupts_withdraw_ended
from oversight.services.interrupts import interrupt_update_html
from tests.conftest import (
    agent_bearer,
    bearer,
    drive,
    person,
    post_json,
    signed_in,
    wait_for,
)
from tests.oversight.decl_interrupts import DOSE_SCHEMA

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State
DECIDED = ("interrupt.approved", "interrupt.rejected", "interrupt.modified")
PAST = {"approve": "approved", "reject": "rejected", "modify": "modified"}
RUN = object()  # stands for the test's run in a parametrized body

REALM = settings.REALM_SLUG  # a 409 names the realm where the winner decided (H9)


# --- Personas, clients and runs -------------------------------------------------------------


@pytest.fixture
def doser_client() -> Client:
    """The doser agent calling the API with its token, each request signed."""
    return agent_bearer(Agent.objects.get(domain__slug="ward", name="doser"))


def decide(client: Client, interrupt: Interrupt, **body):
    return post_json(client, f"/api/v1/interrupts/{interrupt.pk}/decision", body)


def start(blueprint: str, **input) -> LoopRun:
    return services.run_start(domain="ward", blueprint=blueprint, input=input)


def step_until(run: LoopRun, *states: str, timeout: float = 20.0) -> LoopRun:
    """Like drive(), for tests whose commits reach Redis: the session's worker, if one is up,
    may take some of the steps (the lease decides who), so poll until the run is in one of
    states, or ended."""

    def arrived() -> bool:
        for run_id in LoopRun.objects.filter(root_id=run.root_id, state=State.RUNNING).values_list(
            "pk", flat=True
        ):
            engine.advance(run_id=run_id)
        run.refresh_from_db()
        return run.state in states or run.is_terminal

    wait_for(arrived, timeout)
    return run


def interrupted(blueprint: str, **input) -> tuple[LoopRun, Interrupt]:
    run = step_until(start(blueprint, **input), State.INTERRUPTED)
    assert run.state == State.INTERRUPTED, (run.state, run.exit_detail)
    return run, run.interrupts.get(status=Interrupt.Status.PENDING)


def decisions_audited(interrupt: Interrupt) -> list[tuple[str, str]]:
    rows = AuditEvent.objects.filter(
        target_type="interrupt", target_id=str(interrupt.pk), verb__in=DECIDED
    )
    return [(row.verb, row.actor_name) for row in rows]


def race(interrupt: Interrupt, attempts: list[tuple[Client, dict]]) -> list:
    """POST every decision at the same moment, each from its own thread and connection."""
    barrier = threading.Barrier(len(attempts))
    answers: list = [None] * len(attempts)

    def attempt(index: int, client: Client, body: dict) -> None:
        try:
            barrier.wait(timeout=10)
            answers[index] = decide(client, interrupt, **body)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=attempt, args=(i, client, body))
        for i, (client, body) in enumerate(attempts)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(answer is not None for answer in answers), "a decision raised or hung"
    return answers


# --- Exactly one decision wins (H2, CONCEPTS 40) ---------------------------------------------


BODIES = [
    {"decision": "approve"},
    {"decision": "reject", "comment": "too high for this patient"},
    {"decision": "modify", "payload": {"dose_mg": 950}, "comment": "cap it at 950"},
]
# What the run ends with after each decision on ward-dose's 1,600 mg proposal.
FINAL_DOSE = {"approve": 1600, "reject": 900, "modify": 950}


@pytest.mark.django_db(transaction=True)
def test_it_lets_exactly_one_of_eight_concurrent_decisions_win(django_user_model):
    run, interrupt = interrupted("ward-dose")
    deciders = [person(f"nurse{i}", "operator") for i in range(8)]
    bodies = [BODIES[i % 3] for i in range(8)]

    answers = race(
        interrupt, [(signed_in(user), body) for user, body in zip(deciders, bodies, strict=True)]
    )

    assert sorted(answer.status_code for answer in answers) == [200] + [409] * 7
    won = next(i for i, answer in enumerate(answers) if answer.status_code == 200)
    winner, decision = deciders[won].username, bodies[won]["decision"]
    interrupt.refresh_from_db()
    assert (interrupt.status, interrupt.decision) == (Interrupt.Status.DECIDED, decision)
    assert interrupt.decided_by.username == winner
    assert answers[won].json()["decided_by"] == winner
    said = f"already decided by {winner} in realm {REALM} at {interrupt.decided_at.isoformat()}"
    for answer in answers[:won] + answers[won + 1 :]:
        assert answer.json()["error"] == "already_decided"
        assert said in answer.json()["detail"], answer.json()
    assert decisions_audited(interrupt) == [(f"interrupt.{PAST[decision]}", winner)]
    assert Event.objects.filter(run=run, type="interrupt.decided").count() == 1

    run = step_until(run, State.SUCCEEDED)

    assert run.state == State.SUCCEEDED, run.exit_detail
    assert Event.objects.filter(run=run, type="decision.applied").count() == 1
    assert run.result["dose_mg"] == FINAL_DOSE[decision]


@pytest.mark.django_db(transaction=True)
def test_it_answers_two_concurrent_decisions_with_one_200_and_one_409(django_user_model):
    run, interrupt = interrupted("ward-dose")
    otto = person("otto", "operator")
    olga = person("olga", "operator")

    answers = race(interrupt, [(signed_in(otto), BODIES[0]), (signed_in(olga), BODIES[1])])

    assert sorted(answer.status_code for answer in answers) == [200, 409]
    lost = next(answer for answer in answers if answer.status_code == 409).json()
    interrupt.refresh_from_db()
    winner = interrupt.decided_by.username
    assert lost["error"] == "already_decided"
    said = f"already decided by {winner} in realm {REALM} at {interrupt.decided_at.isoformat()}"
    assert said in lost["detail"]
    assert len(decisions_audited(interrupt)) == 1
    assert Event.objects.filter(run=run, type="interrupt.decided").count() == 1


def test_it_tells_a_late_decider_who_decided_and_when(operator, django_user_model):
    _, interrupt = interrupted("ward-dose")
    assert decide(signed_in(operator), interrupt, decision="approve").status_code == 200

    late = decide(signed_in(person("olga", "operator")), interrupt, decision="modify")

    interrupt.refresh_from_db()
    assert late.status_code == 409
    assert late.json() == {
        "error": "already_decided",
        "detail": f"Interrupt {interrupt.pk} was already decided by otto in realm {REALM} at "
        f"{interrupt.decided_at.isoformat()} (approve).",
    }


# --- Approve, reject, modify (CONCEPTS 37) --------------------------------------------------


def test_it_makes_an_approved_proposal_the_phase_result(operator):
    run, interrupt = interrupted("ward-dose", weight_kg=80, mg_per_kg=20)
    assert interrupt.proposal["dose_mg"] == 1600

    answer = decide(
        signed_in(operator), interrupt, decision="approve", comment="checked, it is right"
    )

    assert answer.status_code == 200
    assert (answer.json()["status"], answer.json()["decision"]) == ("decided", "approve")
    run.refresh_from_db()
    assert run.state == State.RUNNING  # the next step applies it
    run = drive(run)
    assert run.state == State.SUCCEEDED
    assert run.exit_reason == LoopRun.ExitReason.QUALITY
    assert run.result == interrupt.proposal
    assert run.iterations.count() == 1  # the approved result was not computed again
    assert decisions_audited(interrupt) == [("interrupt.approved", "otto")]


def test_it_needs_a_reason_to_reject_and_changes_nothing_without_one(operator):
    run, interrupt = interrupted("ward-dose")

    for body in ({"decision": "reject"}, {"decision": "reject", "comment": "   "}):
        answer = decide(signed_in(operator), interrupt, **body)
        assert answer.status_code == 400
        assert answer.json()["error"] == "reason_required"

    interrupt.refresh_from_db()
    run.refresh_from_db()
    assert (interrupt.status, interrupt.decided_at) == (Interrupt.Status.PENDING, None)
    assert run.state == State.INTERRUPTED
    assert "decision" not in run.context
    assert decisions_audited(interrupt) == []


def test_it_feeds_a_rejections_reason_back_to_the_next_iteration(operator):
    run, interrupt = interrupted("ward-dose")
    why = "1,600 mg is too much for her kidneys"

    answer = decide(signed_in(operator), interrupt, decision="reject", comment=why)

    assert answer.status_code == 200
    run = drive(run)
    told = f"rejected by otto: {why}"
    first, second = run.iterations.order_by("number")
    assert second.phase == first.phase  # the same phase again
    assert second.broadcast["feedback"] == [told]
    assert run.state == State.SUCCEEDED
    assert run.result == {"dose_mg": 900, "feedback_seen": [told]}
    assert [
        (row.verb, row.note) for row in AuditEvent.objects.filter(verb="interrupt.rejected")
    ] == [("interrupt.rejected", why)]


def test_it_refuses_a_modification_that_does_not_match_the_schema_and_changes_nothing(operator):
    run, interrupt = interrupted("ward-validate")
    assert interrupt.proposal_schema == DOSE_SCHEMA
    client = signed_in(operator)

    wrong_type = decide(client, interrupt, decision="modify", payload={"dose_mg": "a lot"})
    missing = decide(client, interrupt, decision="modify", payload={"amount": 5})
    negative = decide(client, interrupt, decision="modify", payload={"dose_mg": -5})
    empty = decide(client, interrupt, decision="modify")

    for answer in (wrong_type, missing, negative):
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_payload"
        assert "dose_mg" in answer.json()["detail"], answer.json()
    assert "dose_mg: 'a lot' is not of type 'number'" in wrong_type.json()["detail"]
    assert (empty.status_code, empty.json()["error"]) == (400, "payload_required")
    interrupt.refresh_from_db()
    run.refresh_from_db()
    assert (interrupt.status, interrupt.payload) == (Interrupt.Status.PENDING, None)
    assert run.state == State.INTERRUPTED
    assert "decision" not in run.context
    assert decisions_audited(interrupt) == []


def test_it_puts_a_modified_payload_into_the_run_and_the_next_phase_uses_it(operator):
    run, interrupt = interrupted("ward-validate")

    answer = decide(
        signed_in(operator),
        interrupt,
        decision="modify",
        payload={"dose_mg": 750},
        comment="750 mg",
    )

    assert answer.status_code == 200
    assert answer.json()["payload"] == {"dose_mg": 750}
    run.refresh_from_db()
    assert run.context["decision"]["payload"] == {"dose_mg": 750}
    run = drive(run)
    assert run.state == State.SUCCEEDED, run.exit_detail
    assert run.context["phases"]["compute"] == {"dose_mg": 750}
    assert run.context["human"] == {
        "decision": "modify",
        "payload": {"dose_mg": 750},
        "comment": "750 mg",
        "by": "otto",
    }
    administer = run.iterations.get(phase=1)
    assert [c.output for c in administer.contributions.all()] == [
        {"administered": {"dose_mg": 750}}
    ]
    assert run.result == {"administered": {"dose_mg": 750}}
    assert run.iterations.count() == 2  # the sloppy dose was not computed again
    assert decisions_audited(interrupt) == [("interrupt.modified", "otto")]


def test_it_modifies_the_result_of_the_last_phase(operator):
    run, interrupt = interrupted("ward-dose")

    decide(
        signed_in(operator), interrupt, decision="modify", payload={"dose_mg": 950}, comment="cap"
    )

    run = drive(run)
    assert run.state == State.SUCCEEDED
    assert run.result == {"dose_mg": 950}


# --- Who escalates, and what the interrupt says (CONCEPTS 37, 40) ----------------------------


def test_it_interrupts_a_run_whose_agent_escalates_with_its_stack_address(operator):
    root = drive(start("ward-round"))
    child = root.children.get()

    assert (root.state, child.state) == (State.WAITING, State.INTERRUPTED)
    interrupt = child.interrupts.get()
    assert interrupt.source == Interrupt.Source.AGENT
    assert interrupt.agent.name == "interactor"
    assert interrupt.reason == "severe interaction: warfarin + aspirin"
    assert interrupt.severity == Interrupt.Severity.CRITICAL
    assert interrupt.rationale == "bleeding risk; a pharmacist must confirm"
    assert interrupt.proposal == {"pair": ["warfarin", "aspirin"], "severity": "severe"}
    assert interrupt.iteration == child.iterations.get(number=1)
    assert interrupt.address == {
        "domain": "ward",
        "main": {"run": root.pk, "blueprint": "ward-round"},
        "micro": {"run": child.pk, "blueprint": "ward-check"},
        "iteration": 1,
    }
    assert interrupt.deadline_at == interrupt.created_at + timedelta(seconds=3600)
    queue = signed_in(operator).get("/api/v1/interrupts?status=pending").json()
    assert [(i["id"], i["agent"], i["iteration"]) for i in queue["items"]] == [
        (interrupt.pk, "ward/interactor", 1)
    ]

    assert decide(signed_in(operator), interrupt, decision="approve").status_code == 200
    root = drive(root)
    child.refresh_from_db()
    assert (child.state, root.state) == (State.SUCCEEDED, State.SUCCEEDED)
    assert root.result == {"ward-check": interrupt.proposal}


@pytest.mark.parametrize(
    ("blueprint", "reason", "severity"),
    [
        ("ward-triage", "confidence 0.30 is under the floor 0.5", "warning"),
        ("ward-dose", "dose_mg = 1600 is over the limit 1000", "critical"),
    ],
)
def test_it_interrupts_a_result_the_policy_does_not_trust(blueprint, reason, severity):
    run, interrupt = interrupted(blueprint)

    assert (interrupt.source, interrupt.reason, interrupt.severity) == ("policy", reason, severity)
    assert interrupt.agent is None
    assert interrupt.iteration == run.iterations.get()
    assert interrupt.address == {
        "domain": "ward",
        "main": {"run": run.pk, "blueprint": blueprint},
        "iteration": 1,
    }
    assert interrupt.proposal == run.iterations.get().merged
    assert run.result is None  # nothing was used yet


def test_it_raises_an_interrupt_when_validation_is_exhausted_and_the_policy_says_so():
    run, interrupt = interrupted("ward-validate")

    iteration = run.iterations.get()
    assert iteration.validation["ok"] is False
    assert interrupt.source == "policy"
    assert interrupt.reason.startswith("validation failed 1 rounds: ")
    assert "'dose_mg' is a required property" in interrupt.reason
    assert (interrupt.proposal, interrupt.proposal_schema) == ({"dose": "lots"}, DOSE_SCHEMA)
    assert interrupt.iteration == iteration
    assert run.exit_reason == ""  # not failed: a human decides
    raised = Event.objects.get(run=run, type="interrupt.raised").payload
    assert raised == {"interrupt": interrupt.pk, "source": "policy", "reason": interrupt.reason}
    assert AuditEvent.objects.filter(verb="interrupt.raised", target_id=str(interrupt.pk)).exists()
    assert Alert.objects.filter(kind="interrupt.raised", target_id=str(interrupt.pk)).exists()


# --- Expiry: the default applies, and the admins hear of it (H2, CONCEPTS 40) ---------------


def test_it_applies_the_default_reject_at_the_deadline_and_tells_the_admins(
    operator, admin, mailoutbox
):
    operator.email = "otto@ward.test"
    operator.save()
    admin.email = "ada@ward.test"
    admin.save()
    run, interrupt = interrupted("ward-dose")
    assert interrupt.deadline_at == interrupt.created_at + timedelta(seconds=600)
    assert interrupts_expire_overdue(now=interrupt.deadline_at - timedelta(seconds=1)) == 0
    later = interrupt.deadline_at + timedelta(seconds=1)

    assert interrupts_expire_overdue(now=later) == 1

    interrupt.refresh_from_db()
    assert interrupt.status == Interrupt.Status.EXPIRED
    assert (interrupt.decision, interrupt.tier) == ("reject", Interrupt.Tier.ADMIN)
    assert (interrupt.decided_at, interrupt.decided_by) == (later, None)
    audit = AuditEvent.objects.get(verb="interrupt.expired", target_id=str(interrupt.pk))
    assert (audit.actor, audit.actor_name) == (None, "system")
    assert audit.after["decision"] == "reject"
    alert = Alert.objects.get(kind="interrupt.expired", target_id=str(interrupt.pk))
    assert (alert.audience, alert.level) == (Alert.Audience.ADMINS, Alert.Level.CRITICAL)
    email = alert.notifications.get(channel="email")
    notification_deliver(notification_id=email.pk)
    email.refresh_from_db()
    assert email.status == Notification.Status.SENT, email.last_error
    [mail] = mailoutbox
    assert mail.to == ["ada@ward.test"]  # the admins: not the operator who let it lapse
    assert "Nobody decided in time" in mail.subject
    assert interrupts_expire_overdue(now=later) == 0  # a second sweep finds nothing

    late = decide(signed_in(operator), interrupt, decision="approve")
    assert late.status_code == 409
    assert late.json()["error"] == "already_decided"
    assert f"expired at {later.isoformat()}" in late.json()["detail"]

    run = drive(run)
    told = "rejected by deadline: No decision before the deadline; the default (reject) applied."
    assert run.iterations.get(number=2).broadcast["feedback"] == [told]
    assert (run.state, run.result["dose_mg"]) == (State.SUCCEEDED, 900)


def test_it_applies_the_default_approve_at_the_deadline(admin):
    run, interrupt = interrupted("ward-dose-lenient")

    assert interrupts_expire_overdue(now=interrupt.deadline_at + timedelta(seconds=1)) == 1

    interrupt.refresh_from_db()
    assert (interrupt.status, interrupt.decision) == ("expired", "approve")
    assert Alert.objects.filter(kind="interrupt.expired", audience="admins").count() == 1
    run = drive(run)
    assert (run.state, run.result["dose_mg"]) == (State.SUCCEEDED, 1600)


def test_a_cancelled_runs_interrupt_is_withdrawn_not_decided_nor_expired(operator, admin):
    """Nothing is left to decide once the run has ended: the decision is refused, the
    sweep withdraws the interrupt from every inbox, and no default or alert follows."""
    run, interrupt = interrupted("ward-dose")
    services.run_cancel(run_id=run.pk, actor=operator, reason="wrong patient")

    late = decide(signed_in(operator), interrupt, decision="approve")
    assert late.status_code == 409
    assert late.json()["error"] == "run_ended"
    assert f"Run {run.pk} has ended (cancelled)" in late.json()["detail"]
    interrupt.refresh_from_db()
    assert interrupt.status == Interrupt.Status.PENDING  # the refusal changed nothing

    assert interrupts_withdraw_ended() == 1
    assert interrupts_withdraw_ended() == 0  # a second sweep finds nothing
    interrupt.refresh_from_db()
    assert interrupt.status == Interrupt.Status.WITHDRAWN
    assert interrupt.comment == f"run {run.pk} ended (cancelled) before a decision"
    audit = AuditEvent.objects.get(verb="interrupt.withdrawn", target_id=str(interrupt.pk))
    assert (audit.actor_name, audit.after["run_state"]) == ("system", "cancelled")
    assert interrupt not in selectors.inbox_pending()
    assert "Withdrawn at" in interrupt_update_html(interrupt.pk)

    later = interrupt.deadline_at + timedelta(seconds=1)
    assert interrupts_expire_overdue(now=later) == 0
    assert not Alert.objects.filter(kind="interrupt.expired").exists()
    again = decide(signed_in(operator), interrupt, decision="approve")
    assert (again.status_code, again.json()["error"]) == (409, "already_decided")
    assert "withdrawn" in again.json()["detail"]


# --- Its "Decision needed" alert leaves the feeds once it is settled (issue 17) ------------


def settle(how: str, run: LoopRun, interrupt: Interrupt, operator) -> str:
    """Settle the interrupt the way named; what the retired alert says of it."""
    if how == "decided":
        assert decide(signed_in(operator), interrupt, decision="approve").status_code == 200
        return f"interrupt {interrupt.pk} was decided (approve) by otto"
    if how == "expired":
        assert interrupts_expire_overdue(now=interrupt.deadline_at + timedelta(seconds=1)) == 1
        return f"interrupt {interrupt.pk} expired; its default (reject) applied"
    services.run_cancel(run_id=run.pk, actor=operator, reason="wrong patient")
    assert interrupts_withdraw_ended() == 1
    return f"interrupt {interrupt.pk} was withdrawn: run {run.pk} ended (cancelled)"


@pytest.mark.parametrize("how", ["decided", "expired", "withdrawn"])
def test_a_settled_interrupts_alert_is_retired_from_every_feed(how, operator, admin):
    """The alert asked for a decision; once there is none to take it is acknowledged by the
    system, audited, and a late Acknowledge hears why it is gone. The expiry's own alert
    to the admins stays: it tells what happened in nobody's place."""
    run, interrupt = interrupted("ward-dose")
    asking = Alert.objects.get(kind="interrupt.raised", target_id=str(interrupt.pk))
    assert asking in selectors.recent_alerts()

    why = settle(how, run, interrupt, operator)

    asking.refresh_from_db()
    assert asking.acknowledged_at is not None and asking.acknowledged_by is None
    assert asking.data["retired"].startswith(why)
    assert asking not in selectors.recent_alerts()
    audit = AuditEvent.objects.get(verb="alert.retired", target_id=str(asking.pk))
    assert (audit.actor, audit.actor_name, audit.note) == (None, "system", asking.data["retired"])
    assert audit.before == {"acknowledged_at": None}
    assert audit.after["acknowledged_at"].startswith(f"{asking.acknowledged_at:%Y-%m-%dT%H:%M:%S}")
    expired = Alert.objects.filter(kind="interrupt.expired", acknowledged_at__isnull=True)
    assert expired.count() == (1 if how == "expired" else 0)

    late = post_json(signed_in(operator), f"/api/v1/alerts/{asking.pk}/acknowledge", {})
    assert late.status_code == 409
    assert late.json()["detail"] == (
        f"Alert {asking.pk} was retired at {asking.acknowledged_at.isoformat()}: "
        f"{asking.data['retired']}."
    )
    assert AuditEvent.objects.filter(target_type="alert", target_id=str(asking.pk)).count() == 1


# --- The agent API: POST /api/v1/interrupts (CONCEPTS 37, 39) -------------------------------


def test_it_lets_an_agent_interrupt_a_run_of_its_domain(doser_client):
    run = start("ward-dose")

    answer = post_json(
        doser_client,
        "/api/v1/interrupts",
        {
            "run": run.pk,
            "reason": "the weight in the chart looks wrong",
            "proposal": {"weight_kg": 8},
            "severity": "critical",
            "rationale": "80 kg for a child of four",
        },
    )

    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert (body["source"], body["agent"], body["run"]) == ("agent", "ward/doser", run.pk)
    assert (body["status"], body["severity"], body["default_action"]) == (
        "pending",
        "critical",
        "reject",
    )
    assert body["address"] == {
        "domain": "ward",
        "main": {"run": run.pk, "blueprint": "ward-dose"},
        "iteration": 0,
    }
    run.refresh_from_db()
    assert run.state == State.INTERRUPTED
    interrupt = Interrupt.objects.get(pk=body["id"])
    assert interrupt.deadline_at == interrupt.created_at + timedelta(seconds=600)  # ward-dose's
    assert interrupt.rationale == "80 kg for a child of four"


def test_it_goes_on_with_an_agents_interrupt_once_a_person_decides(doser_client, operator):
    run = start("ward-dose-lenient", weight_kg=10)
    body = {"run": run.pk, "reason": "is 10 kg right?", "proposal": {"weight_kg": 10}}
    interrupt_id = post_json(doser_client, "/api/v1/interrupts", body).json()["id"]
    interrupt = Interrupt.objects.get(pk=interrupt_id)

    assert decide(signed_in(operator), interrupt, decision="approve").status_code == 200

    run = drive(run)
    assert run.state == State.SUCCEEDED
    assert run.result["dose_mg"] == 200


def test_it_refuses_an_agents_interrupt_for_a_run_of_another_domain(doser_client):
    lab_run = services.run_start(domain="lab", blueprint="lab-main", input={})

    answer = post_json(doser_client, "/api/v1/interrupts", {"run": lab_run.pk, "reason": "x"})

    assert answer.status_code == 403
    assert answer.json()["error"] == "forbidden"
    lab_run.refresh_from_db()
    assert lab_run.state == State.RUNNING
    assert not Interrupt.objects.exists()


def test_it_refuses_an_agents_interrupt_for_a_finished_run(doser_client):
    run = drive(start("ward-dose", weight_kg=10))
    assert run.state == State.SUCCEEDED

    answer = post_json(doser_client, "/api/v1/interrupts", {"run": run.pk, "reason": "x"})

    assert answer.status_code == 409
    assert answer.json()["error"] == "wrong_state"
    assert "succeeded" in answer.json()["detail"]
    assert not Interrupt.objects.exists()


def test_it_answers_404_for_an_agents_interrupt_of_an_unknown_run(doser_client):
    answer = post_json(doser_client, "/api/v1/interrupts", {"run": 987654321, "reason": "x"})

    assert answer.status_code == 404
    assert answer.json() == {"error": "not_found", "detail": "There is no run 987654321."}


def test_it_lets_no_person_raise_an_interrupt(operator):
    run = start("ward-dose")
    body = {"run": run.pk, "reason": "I want to look at it"}

    for client in (signed_in(operator), bearer(token_create(user=operator))):
        answer = post_json(client, "/api/v1/interrupts", body)
        assert answer.status_code == 403
        assert answer.json()["error"] == "forbidden"

    run.refresh_from_db()
    assert run.state == State.RUNNING
    assert not Interrupt.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reason": "no run"}, "run"),
        ({"run": "seven", "reason": "x"}, "run"),
        ({"run": RUN}, "reason"),
        ({"run": RUN, "reason": ""}, "reason"),
        ({"run": RUN, "reason": "x", "severity": "dire"}, "severity"),
    ],
)
def test_it_names_the_field_of_a_malformed_interrupt(doser_client, body, field):
    run = start("ward-dose")
    body = {key: run.pk if value is RUN else value for key, value in body.items()}

    answer = post_json(doser_client, "/api/v1/interrupts", body)

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_request"
    assert field in answer.json()["detail"], answer.json()
    run.refresh_from_db()
    assert run.state == State.RUNNING
    assert not Interrupt.objects.exists()


def test_it_answers_400_for_an_interrupt_that_is_not_json(doser_client):
    answer = doser_client.post("/api/v1/interrupts", "{not json", content_type="application/json")

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_json"


# --- Roles: people decide, agents only escalate (CONCEPTS 39, H6) ---------------------------


def test_it_lets_no_agent_decide_reset_halt_lift_or_control_a_run(doser_client):
    run, interrupt = interrupted("ward-dose")
    other = start("ward-dose")
    ward = Domain.objects.get(slug="ward")
    breaker = CircuitBreaker.objects.create(
        name="ward-roles",
        scope=CircuitBreaker.Scope.DOMAIN,
        domain=ward,
        metric=CircuitBreaker.Metric.CONSECUTIVE_FAILURES,
        threshold=3,
    )
    halt = Halt.objects.create(
        scope=f"run:{run.pk}", kind=Halt.Kind.RUN, run=run, reason="for the roles test"
    )
    audited = AuditEvent.objects.count()
    calls = [
        (f"/api/v1/interrupts/{interrupt.pk}/decision", {"decision": "approve"}),
        (f"/api/v1/interrupts/{interrupt.pk}/claim", None),
        (f"/api/v1/breakers/{breaker.pk}/reset", {"reason": "I am fine"}),
        ("/api/v1/halts", {"scope": "domain:ward", "reason": "stop them"}),
        ("/api/v1/halts", {"scope": "global", "reason": "stop everything"}),
        (f"/api/v1/halts/{halt.pk}/lift", {"reason": "let me go"}),
        (f"/api/v1/runs/{other.pk}/pause", None),
        (f"/api/v1/runs/{other.pk}/resume", None),
        (f"/api/v1/runs/{other.pk}/cancel", {"reason": "no"}),
    ]

    for path, body in calls:
        answer = post_json(doser_client, path, body)
        assert (answer.status_code, answer.json()["error"]) == (403, "forbidden"), path

    interrupt.refresh_from_db()
    other.refresh_from_db()
    assert interrupt.status == Interrupt.Status.PENDING
    assert interrupt.claimed_by is None
    assert CircuitBreaker.objects.get(pk=breaker.pk).updated_at == breaker.updated_at
    assert list(Halt.objects.values_list("pk", "lifted_at")) == [(halt.pk, None)]
    assert other.state == State.RUNNING
    assert AuditEvent.objects.count() == audited


def test_it_lets_a_viewer_see_but_not_decide(viewer):
    _, interrupt = interrupted("ward-dose")
    client = signed_in(viewer)

    assert client.get("/api/v1/interrupts?status=pending").json()["count"] == 1
    for path, body in (
        (f"/api/v1/interrupts/{interrupt.pk}/decision", {"decision": "approve"}),
        (f"/api/v1/interrupts/{interrupt.pk}/claim", None),
    ):
        answer = post_json(client, path, body)
        assert answer.status_code == 403
        assert answer.json() == {"error": "forbidden", "detail": "This needs the operator role."}

    interrupt.refresh_from_db()
    assert (interrupt.status, interrupt.claimed_by) == (Interrupt.Status.PENDING, None)


def test_it_shows_who_is_reviewing_and_lets_an_operator_decide(operator):
    _, interrupt = interrupted("ward-dose")
    client = signed_in(operator)

    claimed = post_json(client, f"/api/v1/interrupts/{interrupt.pk}/claim")
    decided = decide(client, interrupt, decision="approve")
    again = post_json(client, f"/api/v1/interrupts/{interrupt.pk}/claim")

    assert (claimed.status_code, claimed.json()["claimed_by"]) == (200, "otto")
    assert (decided.status_code, decided.json()["decided_by"]) == (200, "otto")
    assert (again.status_code, again.json()["error"]) == (409, "already_decided")


def test_it_answers_clearly_for_an_unknown_interrupt_or_decision(operator):
    _, interrupt = interrupted("ward-dose")
    client = signed_in(operator)

    unknown = post_json(client, "/api/v1/interrupts/987654321/decision", {"decision": "approve"})
    maybe = decide(client, interrupt, decision="maybe")

    assert unknown.status_code == 404
    assert unknown.json() == {"error": "not_found", "detail": "There is no interrupt 987654321."}
    assert (maybe.status_code, maybe.json()["error"]) == (400, "invalid_request")
    assert "decision" in maybe.json()["detail"]
    interrupt.refresh_from_db()
    assert interrupt.status == Interrupt.Status.PENDING


# --- End to end on the real worker ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_takes_an_approved_run_to_the_end_on_the_worker(operator, celery_worker):
    client = bearer(token_create(user=operator))
    started = post_json(
        client,
        "/api/v1/domains/ward/runs",
        {"blueprint": "ward-dose", "input": {"weight_kg": 70, "mg_per_kg": 20}},
    )
    assert started.status_code == 201, started.json()
    run_id = started.json()["id"]

    pending = wait_for(
        lambda: client.get(f"/api/v1/interrupts?status=pending&run={run_id}").json()["items"],
        timeout=60,
    )
    [interrupt] = pending
    assert (interrupt["source"], interrupt["proposal"]["dose_mg"]) == ("policy", 1400)
    assert LoopRun.objects.get(pk=run_id).state == State.INTERRUPTED

    answer = post_json(
        client, f"/api/v1/interrupts/{interrupt['id']}/decision", {"decision": "approve"}
    )
    assert answer.status_code == 200, answer.json()

    run = wait_for(
        lambda: LoopRun.objects.filter(pk=run_id, state__in=LoopRun.TERMINAL).first(), timeout=60
    )
    assert run.state == State.SUCCEEDED, run.exit_detail
    assert run.result["dose_mg"] == 1400
    assert Event.objects.filter(run_id=run_id, type="decision.applied").count() == 1


def test_it_keeps_a_parent_waiting_for_its_children_after_a_decision(doser_client, operator):
    root = start("ward-round")
    engine.advance(run_id=root.pk)  # spawns ward-check, and waits for it
    root.refresh_from_db()
    child = root.children.get()
    assert (root.state, child.state) == (State.WAITING, State.RUNNING)
    body = {"run": root.pk, "reason": "is this round needed?"}
    raised = post_json(doser_client, "/api/v1/interrupts", body)
    assert raised.status_code == 201, raised.json()

    decided = decide(
        signed_in(operator), Interrupt.objects.get(pk=raised.json()["id"]), decision="approve"
    )

    assert decided.status_code == 200
    engine.advance(run_id=root.pk)  # the next step applies the decision
    root.refresh_from_db()
    assert root.state == State.WAITING  # for its child, which still runs
    assert root.context["human"]["decision"] == "approve"
    drive(root)  # the child's agent escalates in turn
    child_interrupt = child.interrupts.get(status=Interrupt.Status.PENDING)
    assert decide(signed_in(operator), child_interrupt, decision="approve").status_code == 200
    root = drive(root)
    assert root.state == State.SUCCEEDED, root.exit_detail
    assert root.result == {"ward-check": child_interrupt.proposal}


@pytest.mark.django_db(transaction=True)
def test_it_expires_an_interrupt_on_the_worker_and_the_run_goes_on(operator, celery_worker):
    client = bearer(token_create(user=operator))
    body = {"blueprint": "ward-dose-hasty", "input": {"weight_kg": 60, "mg_per_kg": 20}}
    run_id = post_json(client, "/api/v1/domains/ward/runs", body).json()["id"]
    interrupt = wait_for(lambda: Interrupt.objects.filter(run_id=run_id).first(), timeout=60)
    wait_for(lambda: timezone.now() > interrupt.deadline_at, timeout=5)

    tasks.interrupts_expire_overdue.delay()  # what beat sends every few seconds

    run = wait_for(
        lambda: LoopRun.objects.filter(pk=run_id, state__in=LoopRun.TERMINAL).first(), timeout=60
    )
    interrupt.refresh_from_db()
    assert (interrupt.status, interrupt.decision) == ("expired", "approve")
    assert (run.state, run.result["dose_mg"]) == (State.SUCCEEDED, 1200)
    assert Alert.objects.filter(kind="interrupt.expired", target_id=str(interrupt.pk)).exists()


@pytest.mark.django_db(transaction=True)
def test_a_cancel_withdraws_the_runs_decision_at_once_on_the_worker(operator, celery_worker):
    """No beat runs here: the cancel itself sends the withdrawal, so the decision leaves
    every inbox now, not at the next sweep (issue 17), and its alert is retired with it."""
    client = bearer(token_create(user=operator))
    body = {"blueprint": "ward-dose", "input": {}}
    run_id = post_json(client, "/api/v1/domains/ward/runs", body).json()["id"]
    interrupt = wait_for(lambda: Interrupt.objects.filter(run_id=run_id).first(), timeout=60)

    services.run_cancel(run_id=run_id, actor=operator, reason="wrong patient")

    withdrawn = wait_for(
        lambda: Interrupt.objects.filter(pk=interrupt.pk, status="withdrawn").first(), timeout=10
    )
    assert withdrawn.comment == f"run {run_id} ended (cancelled) before a decision"
    asking = Alert.objects.get(kind="interrupt.raised", target_id=str(interrupt.pk))
    assert asking.acknowledged_at is not None and asking.data["retired"].startswith(
        f"interrupt {interrupt.pk} was withdrawn"
    )
