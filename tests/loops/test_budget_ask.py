"""Budgets that ask (issue 18; CONCEPTS 37, 69; DESIGN.md H2): with on_budget="ask", a run
about to end exhausted for its budget asks a person "extend by X?" with the cost so far,
the projection and the parent's remainder; a modify extends it within the parent's
remainder, a reject ends it as before. The till loops (tests/loops/decl_budget.py) run on
the session's real Celery worker where a decision crosses processes, and in this process
with engine.advance() where a test must hold the stack still between two steps."""

from __future__ import annotations

import pytest

from console.auth import token_create
from loops import engine, services
from loops.declare import DeclarationError, blueprint
from loops.models import Contribution, Event, LoopRun
from loops.specs import Exits, Phase, Policy
from oversight.models import AuditEvent, Interrupt
from tests.conftest import bearer, drive, post_json, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State


def start(name: str) -> LoopRun:
    return services.run_start(domain="till", blueprint=name, input={})


def decide(client, interrupt_id: int, **body):
    return post_json(client, f"/api/v1/interrupts/{interrupt_id}/decision", body)


def question_of(run: LoopRun) -> Interrupt:
    return Interrupt.objects.get(run=run, status=Interrupt.Status.PENDING)


def within(parent: LoopRun) -> bool:
    """The parent's budget holds: what it spent and set aside fits it (CONCEPTS 69)."""
    parent.refresh_from_db()
    return parent.cost + parent.cost_reserved <= parent.budget + 1e-9


def asked_child() -> tuple[LoopRun, LoopRun, Interrupt]:
    """till-main stepped here until its child asks (the third call of 0.4 is over 1.0)."""
    root = drive(start("till-main"))
    child = root.children.get()
    return root, child, question_of(child)


def started_on_the_worker(client) -> tuple[int, Interrupt]:
    answer = post_json(client, "/api/v1/domains/till/runs", {"blueprint": "till-main"})
    assert answer.status_code == 201, answer.json()
    root_id = answer.json()["id"]
    interrupt = wait_for(
        lambda: Interrupt.objects.filter(run__parent_id=root_id, status="pending").first(),
        timeout=60,
    )
    return root_id, interrupt


def test_it_asks_before_a_child_runs_out_with_the_figures_a_person_needs():
    root, child, interrupt = asked_child()

    root.refresh_from_db()
    assert (child.state, root.state) == (State.INTERRUPTED, State.WAITING)
    refused = Contribution.objects.get(iteration__run=child, iteration__number=3)
    assert (refused.status, refused.error_class) == ("failed", "budget")
    assert interrupt.source == "policy"
    # 0.4 a call x the 3 iterations max_iterations still allows = 1.2, capped at the 0.5
    # till-main has left besides the 1.0 it set aside for this child.
    assert interrupt.proposal == {"extend_by": pytest.approx(0.5)}
    assert interrupt.reason.startswith("Budget nearly spent: extend by 0.5?")
    assert f"parent run {root.pk} has 0.5 left" in interrupt.reason
    limit = interrupt.limit
    assert limit["kind"] == "budget"
    assert (limit["cost"], limit["budget"]) == (pytest.approx(0.8), 1.0)
    assert (limit["per_iteration"], limit["iterations_left"]) == (pytest.approx(0.4), 3)
    assert limit["projected"] == pytest.approx(1.2)
    assert (limit["parent"], limit["parent_left"]) == (root.pk, pytest.approx(0.5))
    amount = interrupt.proposal_schema["properties"]["extend_by"]
    assert (amount["exclusiveMinimum"], amount["maximum"]) == (0, pytest.approx(0.5))
    assert not Event.objects.filter(run=child, type="run.exited").exists()
    assert within(root)


@pytest.mark.django_db(transaction=True)
def test_a_modified_extension_lets_the_child_finish_within_the_parents_remainder(
    operator, celery_worker
):
    client = bearer(token_create(user=operator))
    root_id, interrupt = started_on_the_worker(client)
    root = LoopRun.objects.get(pk=root_id)

    answer = decide(client, interrupt.pk, decision="modify", payload={"extend_by": 0.3})
    assert answer.status_code == 200, answer.json()

    def ended() -> LoopRun | None:
        assert within(root)  # at every look, while the child spends its extension
        return LoopRun.objects.filter(pk=root_id, state__in=LoopRun.TERMINAL).first()

    root = wait_for(ended, timeout=60)
    child = root.children.get()
    assert (child.state, child.exit_reason) == (State.SUCCEEDED, "quality"), child.exit_detail
    assert (child.budget, child.cost) == (pytest.approx(1.3), pytest.approx(1.2))
    assert child.iterations.count() == 4  # the refused third iteration, retried
    assert root.state == State.SUCCEEDED, root.exit_detail
    assert (root.cost, root.cost_reserved) == (pytest.approx(1.2), pytest.approx(0))
    [extended] = Event.objects.filter(run=child, type="budget.extended")
    assert extended.payload["extend_by"] == 0.3
    assert extended.payload["decided_by"] == "otto"
    audited = AuditEvent.objects.get(verb="run.budget_extended", target_id=str(child.pk))
    assert (audited.before["budget"], audited.after["budget"]) == (1.0, pytest.approx(1.3))
    assert AuditEvent.objects.filter(verb="interrupt.modified", actor=operator).exists()


@pytest.mark.django_db(transaction=True)
def test_a_reject_ends_the_child_exhausted_for_its_budget(operator, celery_worker):
    client = bearer(token_create(user=operator))
    root_id, interrupt = started_on_the_worker(client)

    answer = decide(client, interrupt.pk, decision="reject", comment="not worth more")
    assert answer.status_code == 200, answer.json()

    root = wait_for(
        lambda: LoopRun.objects.filter(pk=root_id, state__in=LoopRun.TERMINAL).first(),
        timeout=60,
    )
    child = root.children.get()
    assert (child.state, child.exit_reason) == (State.EXHAUSTED, "budget")
    assert "otto did not extend the budget: not worth more" in child.exit_detail
    assert (child.budget, child.cost) == (1.0, pytest.approx(0.8))
    assert (root.cost, root.cost_reserved) == (pytest.approx(0.8), pytest.approx(0))


@pytest.mark.django_db(transaction=True)
def test_it_ends_exhausted_when_the_parents_remainder_shrank_before_the_extension(
    operator, celery_worker
):
    client = bearer(token_create(user=operator))
    root_id, interrupt = started_on_the_worker(client)
    child_id = interrupt.run_id
    services.run_pause(run_id=child_id, actor=operator)  # holds the decision's step back
    answer = decide(client, interrupt.pk, decision="modify", payload={"extend_by": 0.4})
    assert answer.status_code == 200, answer.json()  # 0.5 was left when decided

    assert services.cost_reserve(root_id, 0.3)  # a sibling's budget, set aside meanwhile
    services.run_resume(run_id=child_id, actor=operator)

    child = wait_for(
        lambda: LoopRun.objects.filter(pk=child_id, state__in=LoopRun.TERMINAL).first(),
        timeout=60,
    )
    assert (child.state, child.exit_reason) == (State.EXHAUSTED, "budget")
    assert f"no longer fits what parent run {root_id} has left (0.2)" in child.exit_detail
    assert child.budget == 1.0
    root = LoopRun.objects.get(pk=root_id)
    assert root.cost_reserved == pytest.approx(0.3)  # the sibling's only: nothing of 0.4
    assert within(root)
    refused = AuditEvent.objects.get(verb="run.budget_refused", target_id=str(child_id))
    assert refused.data["extend_by"] == 0.4
    assert Event.objects.filter(run_id=child_id, type="budget.refused").exists()


def test_it_refuses_an_extension_over_the_parents_remainder_and_changes_nothing(operator):
    root, child, interrupt = asked_child()
    client = bearer(token_create(user=operator))

    over = decide(client, interrupt.pk, decision="modify", payload={"extend_by": 0.6})
    assert (over.status_code, over.json()["error"]) == (400, "invalid_payload")
    assert "extend_by" in over.json()["detail"]
    nothing = decide(client, interrupt.pk, decision="modify", payload={"extend_by": 0})
    assert (nothing.status_code, nothing.json()["error"]) == (400, "invalid_payload")

    assert services.cost_reserve(root.pk, 0.3)  # the remainder shrinks to 0.2 meanwhile
    for body in (
        {"decision": "modify", "payload": {"extend_by": 0.4}},
        {"decision": "approve"},  # the 0.5 proposed no longer fits either
    ):
        answer = decide(client, interrupt.pk, **body)
        assert (answer.status_code, answer.json()["error"]) == (400, "over_remainder")
        assert f"parent run {root.pk} has left now (0.2)" in answer.json()["detail"]

    interrupt.refresh_from_db()
    child.refresh_from_db()
    assert (interrupt.status, child.state, child.budget) == ("pending", State.INTERRUPTED, 1.0)
    assert LoopRun.objects.get(pk=root.pk).cost_reserved == pytest.approx(1.3)

    fits = decide(client, interrupt.pk, decision="modify", payload={"extend_by": 0.2})
    assert fits.status_code == 200, fits.json()
    engine.advance(run_id=child.pk)  # the step that applies the decision
    child.refresh_from_db()
    assert child.budget == pytest.approx(1.2)
    assert LoopRun.objects.get(pk=root.pk).cost_reserved == pytest.approx(1.5)
    assert within(root)


def test_a_main_loop_asks_without_a_parent_and_an_approve_extends_it(operator):
    run = drive(start("till-solo"))
    interrupt = question_of(run)
    assert interrupt.limit["parent_left"] is None
    assert "maximum" not in interrupt.proposal_schema["properties"]["extend_by"]
    assert interrupt.proposal == {"extend_by": pytest.approx(1.2)}  # 0.4 x 3, unbounded
    assert "no parent's remainder bounds it" in interrupt.reason

    client = bearer(token_create(user=operator))
    endless = decide(client, interrupt.pk, decision="modify", payload={"extend_by": float("inf")})
    assert endless.status_code == 400  # no maximum at the root, but no endless budget either
    assert Interrupt.objects.get(pk=interrupt.pk).status == "pending"

    answer = decide(client, interrupt.pk, decision="approve")
    assert answer.status_code == 200, answer.json()
    run = drive(run)

    assert (run.state, run.budget, run.cost) == (
        State.SUCCEEDED,
        pytest.approx(2.2),
        pytest.approx(1.2),
    )


def test_it_asks_when_the_cost_reaches_the_budget_between_iterations():
    run = drive(start("till-overspend"))  # bids 0.3 a call, spends 0.5: 1.0 after two

    interrupt = question_of(run)
    assert run.state == State.INTERRUPTED
    assert (interrupt.limit["cost"], interrupt.limit["per_iteration"]) == (1.0, 0.5)
    assert interrupt.proposal == {"extend_by": pytest.approx(2.0)}  # 0.5 x 4 iterations left


def test_exhaust_ends_the_run_as_before_without_asking():
    run = drive(start("till-solo-exhaust"))

    assert (run.state, run.exit_reason) == (State.EXHAUSTED, "budget")
    assert run.cost == pytest.approx(0.8)
    assert not Interrupt.objects.filter(run=run).exists()


def test_the_decision_page_says_what_each_choice_does_to_the_budget(operator, client):
    _, _, interrupt = asked_child()

    page = client.get(f"/oversight/interrupts/{interrupt.pk}/").content.decode()

    assert "Budget nearly spent: extend by 0.5?" in page
    assert "Extend the budget by" in page
    assert "The run ends exhausted (budget), as it would have without asking." in page


def test_it_refuses_to_declare_an_unknown_on_budget():
    unsure = Policy(exits=Exits(max_iterations=2), on_budget="sometimes")  # type: ignore[arg-type]
    with pytest.raises(DeclarationError, match="on_budget must be exhaust or ask"):
        blueprint(
            "till-unsure",
            kind="main",
            domain="till",
            policy=unsure,
            phases=[Phase("meter", task_type="till.meter", capabilities=("meter",))],
        )
