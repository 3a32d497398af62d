"""The education demo's budget question (issue 18; CONCEPTS 15, 37, 69): a learner whose
school is on the LMS's premium plan costs more to publish to than the path's budget, and the
loop asks a person instead of ending exhausted. Stepped here with engine.advance."""

from __future__ import annotations

import pytest

from console.auth import token_create
from demo import education
from demo.services import MAIN_LOOPS
from loops import services
from loops.models import LoopRun
from oversight.models import Interrupt
from tests.conftest import bearer, drive, post_json

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared_breakers")]
State = LoopRun.State


def test_a_premium_learners_path_asks_before_it_passes_the_budget(operator):
    run = services.run_start(
        domain="education",
        blueprint=MAIN_LOOPS["education"],
        input={"learner": {"lms_plan": "premium"}},
    )
    run = drive(run, steps=80)

    assert run.state == State.INTERRUPTED
    interrupt = Interrupt.objects.get(run=run, status=Interrupt.Status.PENDING)
    assert interrupt.reason.startswith("Budget nearly spent: extend by")
    assert (interrupt.limit["budget"], interrupt.limit["parent_left"]) == (
        education.PATH_BUDGET,
        None,  # a main loop: no parent's remainder bounds it
    )
    assert interrupt.limit["cost"] == pytest.approx(0.001)  # the LMS's catalogue lookup

    body = {"decision": "modify", "payload": {"extend_by": 0.002}}
    answer = post_json(
        bearer(token_create(user=operator)), f"/api/v1/interrupts/{interrupt.pk}/decision", body
    )
    assert answer.status_code == 200, answer.json()
    run = drive(run, steps=80)

    assert run.state == State.SUCCEEDED, run.exit_detail
    assert run.result["resources"]
    assert run.budget == pytest.approx(education.PATH_BUDGET + 0.002)
    assert run.cost <= run.budget


def test_a_standard_learners_path_stays_within_the_budget():
    run = services.run_start(
        domain="education",
        blueprint=MAIN_LOOPS["education"],
        input={"learner": {"lms_plan": "standard"}},
    )
    run = drive(run, steps=80)

    assert run.state == State.SUCCEEDED, run.exit_detail
    assert not Interrupt.objects.filter(run__root_id=run.pk).exists()
    assert run.cost == pytest.approx(0.001)
