"""The append-only audit log (DESIGN.md H5, CONCEPTS 39) and the roles that guard it (H6)."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client

from console.roles import ROLES
from loops import services
from loops.models import Agent
from oversight.audit import audit_record
from oversight.models import AuditEvent
from tests.conftest import person

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


def _user(name: str, role: str | None = None):
    return person(name, role, email=f"{name}@example.org")


def _record() -> AuditEvent:
    run = services.run_start(domain="lab", blueprint="lab-main", input={"x": 2})
    return AuditEvent.objects.get(verb="run.started", target_id=str(run.pk))


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE oversight_auditevent SET note = 'rewritten'",
        "DELETE FROM oversight_auditevent",
    ],
)
def test_it_refuses_to_change_or_delete_an_audit_row_in_the_database(statement):
    record = _record()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(statement)

    assert AuditEvent.objects.get(pk=record.pk).note == ""


def test_it_refuses_the_orm_too():
    record = _record()
    record.note = "rewritten"

    for attempt in (
        lambda: record.save(),
        lambda: AuditEvent.objects.filter(pk=record.pk).update(note="x"),
        lambda: record.delete(),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            attempt()

    assert AuditEvent.objects.filter(pk=record.pk, note="").exists()


def test_it_audits_every_human_control_of_a_run_with_before_and_after():
    operator = _user("otto", "operator")
    run = services.run_start(domain="lab", blueprint="lab-main", input={"x": 2}, actor=operator)

    services.run_pause(run_id=run.pk, actor=operator)
    services.run_resume(run_id=run.pk, actor=operator)
    services.run_cancel(run_id=run.pk, actor=operator, reason="wrong input")

    rows = list(AuditEvent.objects.filter(target_type="run", target_id=str(run.pk)).order_by("id"))
    assert [(r.verb, r.actor_name) for r in rows] == [
        ("run.started", "otto"),
        ("run.paused", "otto"),
        ("run.resumed", "otto"),
        ("run.cancelled", "otto"),
    ]
    assert rows[1].before == {"state": "running"} and rows[1].after["state"] == "paused"
    assert rows[3].note == "wrong input" and rows[3].after["state"] == "cancelled"


def test_it_writes_the_record_in_the_transaction_of_the_change():
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=None, verb="run.paused", target=Agent.objects.first())
        raise RuntimeError("the change failed")

    assert not AuditEvent.objects.filter(verb="run.paused").exists()


def test_it_lists_the_log_filtered_for_viewers_and_no_one_else():
    viewer = _user("vera", "viewer")
    operator = _user("otto", "operator")
    run = services.run_start(domain="lab", blueprint="lab-main", input={"x": 2}, actor=operator)
    services.run_pause(run_id=run.pk, actor=operator)
    client = Client()
    client.force_login(viewer)
    from tests.conftest import agent_bearer

    as_agent = agent_bearer(Agent.objects.get(name="planner"))

    paused = client.get("/api/v1/audit?verb=run.paused").json()
    by_otto = client.get("/api/v1/audit?actor=otto&target_type=run").json()
    prefix = client.get("/api/v1/audit?verb=run.").json()
    nobody = Client()
    nobody.force_login(_user("nina"))

    assert [i["verb"] for i in paused["items"]] == ["run.paused"]
    assert paused["items"][0]["actor"] == "otto" and paused["items"][0]["before"]
    assert by_otto["count"] == 2
    assert {i["verb"] for i in prefix["items"]} == {"run.started", "run.paused"}
    assert nobody.get("/api/v1/audit").status_code == 403
    assert as_agent.get("/api/v1/audit").status_code == 403
    assert client.get("/api/v1/audit?since=yesterday").status_code == 400


def test_it_gives_admins_alone_the_global_halt_and_the_lift():
    assert "oversight.lift_halt" in ROLES["admin"]
    assert "oversight.engage_global_halt" in ROLES["admin"]
    for role in ("viewer", "operator"):
        assert "oversight.lift_halt" not in ROLES[role]
        assert "oversight.engage_global_halt" not in ROLES[role]
    operator, admin = _user("otto", "operator"), _user("ada", "admin")
    assert operator.has_perm("oversight.engage_halt") and not operator.has_perm(
        "oversight.lift_halt"
    )
    assert admin.has_perm("oversight.lift_halt")
