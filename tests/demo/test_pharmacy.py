"""The regional pharmacy, the federated demo's second realm (README: The demo): what its
agents compute, when its review waits for a person, and what the hospital's interaction check
makes of its second opinion. The realms themselves run in tests/console/test_federated_demo."""

from __future__ import annotations

import random

from demo import healthcare, pharmacy
from demo.agents.healthcare import ClinicalPharmacologist
from demo.agents.pharmacy import ConsultantPharmacist
from loops.messages import Bid, Outcome, Task

ON_SERTRALINE = ["sertraline", "cefazolin"]


def task(phases: dict, feedback: tuple[str, ...] = ()) -> Task:
    return Task(
        run_id=7,
        iteration=2,
        phase="review",
        task_type="demo.review",
        payload={},
        context={"input": {}, "phases": phases},
        feedback=feedback,
    )


def test_it_finds_a_community_fill_that_interacts_badly_and_is_unsure_of_it():
    fills = [{"drug": "tramadol", "days_ago": 12, "pharmacy": "Riverside Pharmacy"}]

    reviewed = pharmacy.review(ON_SERTRALINE, fills)

    assert not reviewed["agrees"]
    assert reviewed["highest"] == "major"
    assert reviewed["hold"] == ["tramadol"]
    assert "sertraline + tramadol" in reviewed["recommendation"]
    # Under the blueprint's floor: a person decides (a policy interrupt in the pharmacy).
    assert pharmacy.confidence(reviewed) < pharmacy.CONFIDENCE_FLOOR


def test_it_agrees_with_the_hospital_when_the_fills_are_harmless():
    fills = [{"drug": "loratadine", "days_ago": 30, "pharmacy": "Hillcrest Dispensary"}]

    reviewed = pharmacy.review(ON_SERTRALINE, fills)

    assert reviewed["agrees"] and reviewed["hold"] == [] and reviewed["interactions"] == []
    assert pharmacy.confidence(reviewed) >= pharmacy.CONFIDENCE_FLOOR


def test_its_record_holds_an_interacting_fill_only_with_a_hazard():
    drugs = ["warfarin", "acetaminophen"]
    for seed in range(50):
        rng = random.Random(seed)  # noqa: S311 — generated data, as the demo's
        calm = pharmacy.dispensing_record(rng, drugs, hazard=False)
        risky = pharmacy.dispensing_record(random.Random(seed), drugs, hazard=True)  # noqa: S311

        assert pharmacy.review(drugs, calm)["agrees"]
        assert not pharmacy.review(drugs, risky)["agrees"]
        assert all(f["drug"] not in drugs for f in risky)


def test_the_pharmacist_bids_under_the_floor_then_takes_the_fill_as_stopped_once_rejected():
    looked_up = {"drugs": ON_SERTRALINE, "fills": [{"drug": "tramadol", "days_ago": 3}]}
    unsure = task({"dispensing": looked_up})
    rejected = task({"dispensing": looked_up}, feedback=("rejected by ada: stopped in May",))
    pharmacist = ConsultantPharmacist()

    first = pharmacist.bid(unsure)
    again = pharmacist.bid(rejected)
    outcome = pharmacist.perform(rejected)

    assert isinstance(first, Bid) and first.confidence < pharmacy.CONFIDENCE_FLOOR
    assert isinstance(again, Bid) and again.confidence >= pharmacy.CONFIDENCE_FLOOR
    assert outcome.output["hold"] == [] and outcome.output["agrees"]
    assert outcome.output["override"] == "rejected by ada: stopped in May"


def _assess(mechanism: dict) -> Outcome:
    screen = {"drugs": ["simvastatin", "acetaminophen"], "found": []}
    mechanism = {"molecular-interaction": {"predicted": []}, **mechanism}
    phases = {"screen": screen, "mechanism": mechanism}
    return ClinicalPharmacologist().perform(task(phases))


def test_the_hospital_holds_what_the_pharmacy_advises_and_says_whose_opinion_it_was():
    opinion = pharmacy.review(
        ["simvastatin", "acetaminophen"], [{"drug": "clarithromycin", "days_ago": 5}]
    )

    outcome = _assess({"regional-pharmacy:second-opinion": opinion})
    assessed = outcome.output

    assert assessed["hold"] == ["simvastatin"]  # the table's advice for the pair
    assert assessed["second_opinion"]["realm"] == "regional-pharmacy"
    assert assessed["second_opinion"]["community_fills"] == ["clarithromycin"]
    assert not assessed["second_opinion"]["agrees"]
    assert "medication reconciliation (community fills)" in assessed["monitoring"]
    # The hospital does not ask its own people again: a person in the pharmacy decided.
    assert assessed["action"] == "hold" and outcome.escalate is None


def test_the_single_realm_check_is_unchanged():
    assessed = _assess({}).output

    assert "second_opinion" not in assessed
    assert assessed == {
        **healthcare.assess(["simvastatin", "acetaminophen"], [], []),
        "action": "continue",
    }
