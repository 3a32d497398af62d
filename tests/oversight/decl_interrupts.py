"""Loops the interrupt tests run: the ward domain (tests.settings names this module).

Each agent has a capability of its own, so each phase hears exactly one agent:

    doser       weight * mg/kg; 1,600 mg for 80 kg at 20 mg/kg, over the 1,000 mg limit of
                ward-dose. Told "rejected …" it proposes 900 mg, and it shows what it was told.
    interactor  finds warfarin + aspirin and asks a human (Outcome(escalate=...)).
    unsure      answers with a confidence of 0.3, under ward-triage's floor of 0.5.
    sloppy      answers {"dose": "lots"}, which never matches the dose schema.
    nurse       the second phase: administers what the first phase decided.
"""

from __future__ import annotations

from loops.declare import agent, blueprint, domain, python_agent
from loops.messages import Bid, Escalation, Outcome
from loops.specs import Escalate, EscalateTo, Exits, Phase, Policy, Remind

domain("ward", "Ward", "Loops that stop for a human decision.")

DOSE_SCHEMA = {
    "type": "object",
    "required": ["dose_mg"],
    "properties": {
        "dose_mg": {"type": "number", "minimum": 0, "title": "Dose", "unit": "mg"},
        "max_dose_mg": {"type": "number", "title": "maximum for this patient", "unit": "mg"},
    },
}
DOSE_LIMIT_MG = 1000


@python_agent("ward.doser")
class Doser:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        given = task.context["input"]
        dose = given.get("weight_kg", 80) * given.get("mg_per_kg", 20)
        if any(line.startswith("rejected") for line in task.feedback):
            dose = 900  # a human said no: stay under the limit
        return Outcome(output={"dose_mg": dose, "feedback_seen": list(task.feedback)})


@python_agent("ward.case-doser")
class CaseDoser:
    """1,450 mg against this patient's own maximum of 1,000 mg (a field of the result)."""

    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        return Outcome(output={"dose_mg": 1450, "max_dose_mg": 1000})


@python_agent("ward.interactor")
class Interactor:
    def bid(self, task):
        return Bid(confidence=0.8)

    def perform(self, task):
        found = {"pair": ["warfarin", "aspirin"], "severity": "severe"}
        return Outcome(
            output=found,
            rationale="both thin the blood",
            escalate=Escalation(
                reason="severe interaction: warfarin + aspirin",
                severity="critical",
                rationale="bleeding risk; a pharmacist must confirm",
            ),
        )


@python_agent("ward.unsure")
class Unsure:
    def bid(self, task):
        return Bid(confidence=0.3)

    def perform(self, task):
        return Outcome(output={"triage": "yellow"})


@python_agent("ward.sloppy")
class Sloppy:
    def bid(self, task):
        return Bid(confidence=0.7)

    def perform(self, task):
        return Outcome(output={"dose": "lots"})


@python_agent("ward.nurse")
class Nurse:
    def bid(self, task):
        return Bid(confidence=0.9)

    def perform(self, task):
        return Outcome(output={"administered": task.context["phases"]["compute"]})


# doser also raises interrupts through the API in tests, signing with $TEST_AGENT_SECRET.
agent(
    "ward",
    "doser",
    implementation="ward.doser",
    capabilities=("dosing",),
    secret_env="TEST_AGENT_SECRET",
)
agent("ward", "case-doser", implementation="ward.case-doser", capabilities=("case-dosing",))
agent("ward", "interactor", implementation="ward.interactor", capabilities=("interactions",))
agent("ward", "unsure", implementation="ward.unsure", capabilities=("triage",))
agent("ward", "sloppy", implementation="ward.sloppy", capabilities=("sloppy-dosing",))
agent("ward", "nurse", implementation="ward.nurse", capabilities=("administer",))

_exits = Exits(quality=("validated",), max_iterations=5)


def _dose_policy(default_action: str = "reject", deadline_s: float = 600) -> Policy:
    return Policy(
        exits=_exits,
        escalation=Escalate(
            over={"dose_mg": DOSE_LIMIT_MG}, deadline_s=deadline_s, default_action=default_action
        ),
    )


def _compute(capability: str) -> Phase:
    return Phase(
        "compute", task_type="ward.dose", capabilities=(capability,), output_schema=DOSE_SCHEMA
    )


# A value over its limit: the policy interrupts before the dose is used.
blueprint(
    "ward-dose", kind="main", domain="ward", policy=_dose_policy(), phases=[_compute("dosing")]
)
blueprint(
    "ward-dose-lenient",
    kind="main",
    domain="ward",
    policy=_dose_policy("approve"),
    phases=[_compute("dosing")],
)
# The limit is another field of the result: this patient's maximum.
blueprint(
    "ward-dose-case",
    kind="main",
    domain="ward",
    policy=Policy(
        exits=_exits,
        escalation=Escalate(
            over={"dose_mg": "max_dose_mg"},
            on_reject="the doser then proposes no more than the maximum",
        ),
    ),
    phases=[_compute("case-dosing")],
)
# Nobody has a second to decide: the worker's expiry sweep approves.
blueprint(
    "ward-dose-hasty",
    kind="main",
    domain="ward",
    policy=_dose_policy("approve", deadline_s=1),
    phases=[_compute("dosing")],
)
# An escalation ladder (issue 18): the on-call group is reminded at 2 minutes, the admins
# brought in at 5, and the dose rejected at 10 (tests/oversight/test_ladder.py).
blueprint(
    "ward-dose-ladder",
    kind="main",
    domain="ward",
    policy=Policy(
        exits=_exits,
        escalation=Escalate(
            over={"dose_mg": DOSE_LIMIT_MG},
            deadline_s=600,
            default_action="reject",
            ladder=(Remind(120, to="group:on-call"), EscalateTo(300, to="admins")),
        ),
    ),
    phases=[_compute("dosing")],
)
# The agent asks for a human in its own result.
blueprint(
    "ward-interactions",
    kind="main",
    domain="ward",
    policy=Policy(exits=_exits),
    phases=[Phase("check", task_type="ward.check", capabilities=("interactions",))],
)
# Confidence under the floor.
blueprint(
    "ward-triage",
    kind="main",
    domain="ward",
    policy=Policy(exits=_exits, escalation=Escalate(confidence_below=0.5)),
    phases=[Phase("triage", task_type="ward.triage", capabilities=("triage",))],
)
# Validation exhausted → interrupt; the second phase uses whatever the first decided.
blueprint(
    "ward-validate",
    kind="main",
    domain="ward",
    policy=Policy(exits=_exits, validation_rounds=1, on_validation_exhausted="interrupt"),
    phases=[
        _compute("sloppy-dosing"),
        Phase("administer", task_type="ward.administer", capabilities=("administer",)),
    ],
)
# A stack: the round calls a micro-loop whose agent escalates.
blueprint(
    "ward-check",
    kind="micro",
    domain="ward",
    policy=Policy(exits=_exits),
    phases=[Phase("check", task_type="ward.check", capabilities=("interactions",))],
)
blueprint(
    "ward-round",
    kind="main",
    domain="ward",
    children=("ward-check",),
    policy=Policy(exits=_exits),
    phases=[Phase("check", call=("ward-check",))],
)
# Issue 18: a dose over twice the limit takes two people (1,600 mg: one; 2,400 mg at 30
# mg/kg: two); and one that always takes one operator and one admin.
blueprint(
    "ward-dose-quorum",
    kind="main",
    domain="ward",
    policy=Policy(
        exits=_exits,
        escalation=Escalate(
            over={"dose_mg": DOSE_LIMIT_MG},
            approvals=2,
            quorum_over={"dose_mg": (DOSE_LIMIT_MG, 2.0)},
            deadline_s=600,
        ),
    ),
    phases=[_compute("dosing")],
)
blueprint(
    "ward-dose-two-roles",
    kind="main",
    domain="ward",
    policy=Policy(
        exits=_exits,
        escalation=Escalate(
            over={"dose_mg": DOSE_LIMIT_MG}, approvals=2, approvers_from=("operator", "admin")
        ),
    ),
    phases=[_compute("dosing")],
)
