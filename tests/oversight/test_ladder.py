"""Escalation ladders (issue 18; CONCEPTS 37, 40; DESIGN.md H2, H5): an interrupt nobody
decides reminds the on-call group, goes to the admins, then takes its default, each step once,
audited as the system, told by notification to its audience and shown on the card's
countdown. The clock is frozen: the sweeps take `now`, set from the interrupt's own times.

ward-dose-ladder (tests/oversight/decl_interrupts.py): 1,600 mg over the 1,000 mg limit;
reminds group:on-call at 120 s, goes to admins at 300 s, rejects at 600 s."""

from __future__ import annotations

import asyncio
import io
import re
import threading
from datetime import UTC, datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from console.asgi import application
from loops import services
from loops.declare import BLUEPRINTS, DeclarationError, blueprint
from loops.models import LoopRun
from loops.specs import Escalate, EscalateTo, Exits, Phase, Policy, Remind, Rung
from oversight import presenting
from oversight.models import Alert, AuditEvent, Interrupt, Notification
from oversight.services.alerts import notification_deliver
from oversight.services.deadlines import interrupts_expire_overdue
from oversight.services.interrupts import interrupt_update_html
from oversight.services.ladders import interrupts_climb_due
from tests.conftest import drive, person, post_json, signed_in, with_role

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
SECOND = timedelta(seconds=1)


def ladder_interrupt() -> Interrupt:
    run = drive(services.run_start(domain="ward", blueprint="ward-dose-ladder", input={}))
    assert run.state == LoopRun.State.INTERRUPTED, (run.state, run.exit_detail)
    return run.interrupts.get(status=Interrupt.Status.PENDING)


def hms(moment: datetime) -> str:
    return timezone.localtime(moment).strftime("%H:%M:%S")


def card(interrupt: Interrupt) -> str:
    """The countdown line of the card as pushed to every inbox and decision page."""
    html = interrupt_update_html(interrupt.pk)
    start = html.index('<p class="interrupt-ladder">')
    return html[start : html.index("</p>", start)].removeprefix('<p class="interrupt-ladder">')


def audited(interrupt: Interrupt, verb: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(target_id=str(interrupt.pk), verb=verb))


def emailed(interrupt: Interrupt, kind: str, mailoutbox) -> list[str]:
    """Deliver the alert's email notification (as a worker would) and return its recipients."""
    alert = Alert.objects.get(kind=kind, target_id=str(interrupt.pk))
    email = alert.notifications.get(channel="email")
    sent = len(mailoutbox)
    notification_deliver(notification_id=email.pk)
    email.refresh_from_db()
    assert email.status == Notification.Status.SENT, email.last_error
    [mail] = mailoutbox[sent:]
    return mail.to


@pytest.fixture
def people(operator, admin) -> None:
    """otto the operator, ada the admin and carl of the on-call group, each with an address."""
    for user, address in ((operator, "otto@ward.test"), (admin, "ada@ward.test")):
        user.email = address
        user.save()
    carl = person("carl", email="carl@ward.test")
    carl.groups.add(Group.objects.get_or_create(name="on-call")[0])


# --- One interrupt walked through the ladder ------------------------------------------------


def test_it_reminds_then_escalates_then_applies_the_default(people, mailoutbox):
    interrupt = ladder_interrupt()
    raised = interrupt.created_at
    remind_at, escalate_at = raised + timedelta(seconds=120), raised + timedelta(seconds=300)
    assert interrupt.deadline_at == raised + timedelta(seconds=600)
    # Stored as raised, with absolute times: a later change to the blueprint moves nothing.
    assert interrupt.ladder == [
        {"at": remind_at.isoformat(), "action": "remind", "to": "group:on-call", "done_at": None},
        {"at": escalate_at.isoformat(), "action": "escalate", "to": "admins", "done_at": None},
    ]
    deadline = hms(interrupt.deadline_at)
    assert card(interrupt) == (
        f"Escalation: reminds the on-call group at {hms(remind_at)}; goes to admins at "
        f"{hms(escalate_at)}; rejects at {deadline}."
    )
    assert interrupts_climb_due(now=remind_at - SECOND) == 0  # not due yet

    # 1. The reminder, to the on-call group only.
    reminded = remind_at + SECOND
    assert interrupts_climb_due(now=reminded) == 1
    interrupt.refresh_from_db()
    assert (interrupt.status, interrupt.tier) == ("pending", Interrupt.Tier.OPERATOR)
    [row] = audited(interrupt, "interrupt.reminded")
    assert (row.actor, row.actor_name, row.data["to"]) == (None, "system", "group:on-call")
    alert = Alert.objects.get(kind="interrupt.reminded", target_id=str(interrupt.pk))
    assert alert.audience == "group:on-call"
    assert sorted(alert.notifications.values_list("channel", flat=True)) == ["console", "email"]
    assert emailed(interrupt, "interrupt.reminded", mailoutbox) == ["carl@ward.test"]
    assert card(interrupt) == (
        f"Escalation: reminded the on-call group at {hms(reminded)}; goes to admins at "
        f"{hms(escalate_at)}; rejects at {deadline}."
    )
    assert interrupts_climb_due(now=reminded) == 0  # a second sweep finds it done

    # 2. The escalation: the admins hear of it, and it is at their tier.
    escalated = escalate_at + SECOND
    assert interrupts_climb_due(now=escalated) == 1
    interrupt.refresh_from_db()
    assert (interrupt.status, interrupt.tier) == ("pending", Interrupt.Tier.ADMIN)
    [row] = audited(interrupt, "interrupt.escalated")
    assert row.before == {"tier": "operator"}
    assert row.after["tier"] == "admin" and row.actor_name == "system"
    alert = Alert.objects.get(kind="interrupt.escalated", target_id=str(interrupt.pk))
    assert alert.audience == Alert.Audience.ADMINS
    assert emailed(interrupt, "interrupt.escalated", mailoutbox) == ["ada@ward.test"]
    assert card(interrupt) == (
        f"Escalation: reminded the on-call group at {hms(reminded)}; went to admins at "
        f"{hms(escalated)}; rejects at {deadline}."
    )

    # 3. The deadline: the default applies as ever, and the admins are told.
    expired = interrupt.deadline_at + SECOND
    assert interrupts_climb_due(now=expired) == 0
    assert interrupts_expire_overdue(now=expired) == 1
    interrupt.refresh_from_db()
    assert (interrupt.status, interrupt.decision) == ("expired", "reject")
    assert audited(interrupt, "interrupt.expired")[0].actor_name == "system"
    assert emailed(interrupt, "interrupt.expired", mailoutbox) == ["ada@ward.test"]
    assert card(interrupt) == (
        f"Escalation: reminded the on-call group at {hms(reminded)}; went to admins at "
        f"{hms(escalated)}; rejected at {hms(expired)}."
    )
    # Each step once: one audit row and one alert each.
    for verb in ("interrupt.reminded", "interrupt.escalated", "interrupt.expired"):
        assert len(audited(interrupt, verb)) == 1
        assert Alert.objects.filter(kind=verb, target_id=str(interrupt.pk)).count() == 1


def test_the_decision_page_and_the_inbox_show_the_countdown(people, operator):
    interrupt = ladder_interrupt()
    remind_at = interrupt.created_at + timedelta(seconds=120)
    interrupts_climb_due(now=remind_at + SECOND)
    client = signed_in(operator)

    for url in (f"/oversight/interrupts/{interrupt.pk}/", "/oversight/inbox/"):
        page = client.get(url).content.decode()
        assert f"Escalation: reminded the on-call group at {hms(remind_at + SECOND)}" in page, url


def test_the_status_command_prints_the_countdown(people):
    interrupt = ladder_interrupt()
    remind_at = interrupt.created_at + timedelta(seconds=120)
    out = io.StringIO()

    call_command("status", stdout=out)

    assert f"escalation: reminds the on-call group at {hms(remind_at)}; goes to admins" in (
        out.getvalue()
    )


def test_a_late_sweep_takes_every_step_due_but_none_past_the_deadline(people):
    interrupt = ladder_interrupt()
    late = interrupt.created_at + timedelta(seconds=400)  # the beat was down for a while

    assert interrupts_climb_due(now=late) == 2

    interrupt.refresh_from_db()
    assert [rung["done_at"] for rung in interrupt.ladder] == [late.isoformat()] * 2
    assert (interrupt.tier, interrupt.rung_due_at) == (Interrupt.Tier.ADMIN, None)
    assert len(audited(interrupt, "interrupt.reminded")) == 1
    assert len(audited(interrupt, "interrupt.escalated")) == 1

    other = ladder_interrupt()  # another run's: past its deadline, the expiry's turn
    assert interrupts_climb_due(now=other.deadline_at + SECOND) == 0
    assert not audited(other, "interrupt.reminded")
    assert interrupts_expire_overdue(now=other.deadline_at + SECOND) == 2
    other.refresh_from_db()
    assert (other.status, other.rung_due_at) == ("expired", None)


def test_a_decided_interrupt_climbs_no_further(people, operator):
    interrupt = ladder_interrupt()
    answer = post_json(
        signed_in(operator), f"/api/v1/interrupts/{interrupt.pk}/decision", {"decision": "approve"}
    )
    assert answer.status_code == 200, answer.content

    assert interrupts_climb_due(now=interrupt.deadline_at - SECOND) == 0

    assert not audited(interrupt, "interrupt.reminded")
    assert not Alert.objects.filter(kind="interrupt.reminded").exists()
    assert "interrupt-ladder" not in interrupt_update_html(interrupt.pk)  # nothing happened


def test_the_api_gives_the_ladder_with_its_times(people, viewer):
    interrupt = ladder_interrupt()
    reminded = interrupt.created_at + timedelta(seconds=121)
    interrupts_climb_due(now=reminded)

    body = signed_in(viewer).get(f"/api/v1/interrupts/{interrupt.pk}").json()

    remind, escalate = body["ladder"]
    assert (remind["action"], remind["to"]) == ("remind", "group:on-call")
    assert datetime.fromisoformat(remind["at"]) == interrupt.created_at + timedelta(seconds=120)
    assert datetime.fromisoformat(remind["done_at"]) == reminded
    assert re.search(r"T\d\d:\d\d:\d\d\.\d{6}", remind["at"])  # microseconds, as every time
    assert (escalate["action"], escalate["to"], escalate["done_at"]) == ("escalate", "admins", None)
    listed = signed_in(viewer).get("/api/v1/interrupts?status=pending").json()["items"]
    assert [item["ladder"] for item in listed] == [body["ladder"]]


def test_an_interrupt_without_a_ladder_is_as_before(people):
    run = drive(services.run_start(domain="ward", blueprint="ward-dose", input={}))
    interrupt = run.interrupts.get()
    assert (interrupt.ladder, interrupt.rung_due_at) == (None, None)
    assert interrupts_climb_due(now=interrupt.deadline_at - SECOND) == 0
    assert "interrupt-ladder" not in interrupt_update_html(interrupt.pk)


# --- Two sweepers at once: each step happens once (H2) --------------------------------------


def two_sweeps(now: datetime) -> list[int]:
    """Two beat sweeps at the same moment, each in its own thread and connection."""
    barrier = threading.Barrier(2)
    taken: list[int] = []

    def sweep() -> None:
        try:
            barrier.wait(timeout=10)
            taken.append(interrupts_climb_due(now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return sorted(taken)


@pytest.mark.django_db(transaction=True)
def test_each_step_happens_once_under_two_concurrent_sweeps(people):
    interrupt = ladder_interrupt()
    for after, verb in ((121, "interrupt.reminded"), (301, "interrupt.escalated")):
        assert two_sweeps(interrupt.created_at + timedelta(seconds=after)) == [0, 1], verb
        assert len(audited(interrupt, verb)) == 1
        assert Alert.objects.filter(kind=verb, target_id=str(interrupt.pk)).count() == 1
    interrupt.refresh_from_db()
    assert all(rung["done_at"] for rung in interrupt.ladder)


# --- The card is pushed after each step -----------------------------------------------------


@pytest.fixture
def inbox_cookie(client, django_user_model) -> bytes:
    user = django_user_model.objects.create_user("watcher", password="a long passphrase")
    client.force_login(with_role(user, "operator"))
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_the_card_is_pushed_to_every_inbox_after_a_step(inbox_cookie):
    interrupt = await sync_to_async(ladder_interrupt)()
    socket = WebsocketCommunicator(
        application,
        "/ws/console/?topics=inbox",
        headers=[
            (b"host", b"localhost"),
            (b"origin", b"http://localhost"),
            (b"cookie", inbox_cookie),
        ],
    )
    connected, _ = await socket.connect()
    assert connected
    reminded = interrupt.created_at + timedelta(seconds=121)

    assert await sync_to_async(interrupts_climb_due)(now=reminded) == 1

    expected = f"Escalation: reminded the on-call group at {hms(reminded)}"
    async with asyncio.timeout(10):  # other pushes (liveness, alerts) may come first
        while expected not in (message := await socket.receive_from(timeout=10)):
            pass
    await socket.disconnect()
    assert f'id="interrupt-{interrupt.pk}-card"' in message
    assert 'hx-swap-oob="true"' in message


# --- Declarations: a ladder that makes no sense is refused, and says why --------------------


def _declare(*ladder, deadline_s: float = 600) -> None:
    blueprint(
        "ward-bad-ladder",
        kind="main",
        domain="ward",
        policy=Policy(
            exits=Exits(max_iterations=1),
            escalation=Escalate(deadline_s=deadline_s, ladder=tuple(ladder)),
        ),
        phases=[Phase("x", task_type="ward.dose", capabilities=("dosing",))],
    )


@pytest.mark.parametrize(
    ("ladder", "message"),
    [
        (
            (Remind(300), Remind(120)),
            "escalation ladder step 2 at 120 s must come after step 1",
        ),
        ((Remind(0),), "escalation ladder step 1 at 0 s must come after the interrupt is raised"),
        (
            (EscalateTo(600),),
            "escalation ladder step 1 at 600 s is not before the deadline (600 s), where the "
            "default (reject) applies",
        ),
        ((Remind(60, to="pagers"),), "escalation ladder step 1 goes to 'pagers': use operators"),
        ((Remind(60, to="group:"),), "goes to 'group:': use operators, admins or group:<name>"),
        ((EscalateTo(60, to="operators"),), "escalates to operators, the first tier"),
        ((Rung(60, action="page"),), "the action must be remind or escalate, not 'page'"),
        (("remind at 60",), "step 1 is 'remind at 60': write Remind(after_s, to=…)"),
    ],
)
def test_a_ladder_that_makes_no_sense_is_refused_with_a_clear_message(ladder, message):
    with pytest.raises(DeclarationError, match="blueprint 'ward-bad-ladder'") as refused:
        _declare(*ladder)
    assert message in str(refused.value)
    assert "ward-bad-ladder" not in BLUEPRINTS


def test_a_ladder_in_order_before_the_deadline_is_declared():
    try:
        _declare(Remind(60, to="group:on-call.night"), EscalateTo(120), EscalateTo(300))
        assert len(BLUEPRINTS["ward-bad-ladder"].policy.escalation.ladder) == 3
    finally:
        BLUEPRINTS.pop("ward-bad-ladder", None)


def test_the_demo_declares_a_ladder_for_a_critical_anomaly():
    ladder = BLUEPRINTS["anomaly-detection"].policy.escalation.ladder
    assert [(rung.action, rung.to) for rung in ladder] == [
        ("remind", "group:on-call"),
        ("escalate", "admins"),
    ]


# --- The sentence (oversight.presenting.ladder_sentence): a pure function -------------------

T0 = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


def at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


LADDER = [
    {"at": at(2), "action": "remind", "to": "group:on-call", "done_at": None},
    {"at": at(5), "action": "escalate", "to": "admins", "done_at": None},
]


def sentence(ladder, **kwargs) -> str:
    kwargs.setdefault("deadline_at", T0 + timedelta(minutes=10))
    kwargs.setdefault("default_action", "reject")
    return presenting.ladder_sentence(ladder, **kwargs)


def test_the_sentence_names_the_steps_to_come_and_the_default_last():
    assert sentence(LADDER) == (
        "reminds the on-call group at 10:02; goes to admins at 10:05; rejects at 10:10"
    )


def test_the_sentence_gives_a_taken_step_the_time_it_was_taken():
    taken = [{**LADDER[0], "done_at": at(2)}, LADDER[1]]
    assert sentence(taken) == (
        "reminded the on-call group at 10:02; goes to admins at 10:05; rejects at 10:10"
    )
    late = [{**LADDER[0], "done_at": at(2.5)}, LADDER[1]]
    assert sentence(late) == (
        "reminded the on-call group at 10:02:30; goes to admins at 10:05:00; rejects at 10:10:00"
    )


def test_the_sentence_once_settled_says_only_what_happened():
    taken = [{**LADDER[0], "done_at": at(2)}, {**LADDER[1], "done_at": at(5)}]
    expired = sentence(taken, status="expired", decided_at=T0 + timedelta(minutes=10))
    assert expired == (
        "reminded the on-call group at 10:02; went to admins at 10:05; rejected at 10:10"
    )
    decided = sentence([{**LADDER[0], "done_at": at(2)}, LADDER[1]], status="decided")
    assert decided == "reminded the on-call group at 10:02"
    assert sentence(LADDER, status="decided") == ""


def test_the_sentence_is_in_the_given_time_zone_and_empty_without_a_ladder():
    plus_one = dt_timezone(timedelta(hours=1))
    assert sentence(LADDER, default_action="approve", tz=plus_one) == (
        "reminds the on-call group at 11:02; goes to admins at 11:05; approves at 11:10"
    )
    assert sentence(None) == sentence([]) == ""
    assert presenting.audience_name("operators") == "operators"
