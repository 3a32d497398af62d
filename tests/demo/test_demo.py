"""The demo domains (DESIGN.md section 7; CONCEPTS 12, 14 to 19): what their agents compute,
their stacks on the engine (stepped here with engine.advance, and on a real worker), the
escalations and breakers, and the beat's top-up. tests.settings declares the demo with every
rate at 0 and DEMO_ENABLED off; a test that wants a rate sets it."""

from __future__ import annotations

import os
import subprocess
import sys
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from console.roles import roles_sync
from demo import education, faults, healthcare, industrial
from demo.services import MAIN_LOOPS, demo_keep_running, demo_working
from loops import services
from loops.declare import BLUEPRINTS, DeclarationError, blueprint, sync_declarations
from loops.models import Bid, Domain, LoopRun
from loops.specs import Exits, Phase, Policy
from oversight import presenting
from oversight.models import CircuitBreaker, Interrupt
from oversight.services import halts, interrupts
from tests import conftest
from tests.conftest import ROOT, wait_for, with_role

State = LoopRun.State
DEMO = tuple(MAIN_LOOPS)


pytestmark = pytest.mark.usefixtures("declared_breakers")


def start(domain: str, **input) -> LoopRun:
    return services.run_start(domain=domain, blueprint=MAIN_LOOPS[domain], input=input)


def drive(run: LoopRun, steps: int = 80) -> LoopRun:
    return conftest.drive(run, steps=steps)


def frame(root: LoopRun, blueprint_name: str) -> LoopRun:
    return LoopRun.objects.get(root_id=root.root_id, blueprint__name=blueprint_name)


HEAVY_PATIENT = {
    "age": 40,
    "sex": "M",
    "weight_kg": 110,
    "creatinine_mg_dl": 0.8,
    "medications": [],
    "order": {"drug": "vancomycin", "mg_per_kg": 20},
}


# --- CONCEPTS 12: the seed -----------------------------------------------------------------


def test_it_seeds_three_domains_with_a_main_run_each():
    Domain.objects.filter(slug__in=DEMO).update(description="")  # the seed brings them back

    call_command("demo_seed", stdout=StringIO())

    for slug in DEMO:
        domain = Domain.objects.get(slug=slug)
        assert domain.description
        mains = LoopRun.objects.filter(domain=domain, depth=0, blueprint__kind="main")
        assert mains.count() >= 1


# --- CONCEPTS 14: healthcare ---------------------------------------------------------------


def test_it_doses_by_weight_and_adjusts_for_the_kidneys():
    patient = healthcare.complete_patient({**HEAVY_PATIENT, "weight_kg": 70, "sex": "F"})
    dose = healthcare.compute_dose(patient)
    assert dose["dose_mg"] == 1500  # 20 mg/kg x 70 kg = 1,400, rounded to the 250 mg step
    assert dose["percent_of_max"] == 75.0
    assert dose["infusion_minutes"] == 150  # no faster than 10 mg/min

    frail = healthcare.complete_patient({**patient, "age": 85, "creatinine_mg_dl": 2.0})
    assert frail["crcl_ml_min"] < 30
    adjusted = healthcare.compute_dose(frail, renal=True)
    assert adjusted["renal_factor"] < 0.4
    assert adjusted["dose_mg"] < dose["dose_mg"]
    assert healthcare.dose_problems(adjusted) == []
    assert healthcare.dose_problems({**adjusted, "dose_mg": -5}) != []


def test_it_interrupts_a_dose_over_the_maximum_as_critical():
    run = drive(start("healthcare", patient=HEAVY_PATIENT))

    dosing = frame(run, "dosage-calculation")
    assert dosing.state == State.INTERRUPTED
    assert run.state == State.WAITING  # the whole stack waits for the person
    interrupt = Interrupt.objects.get(run=dosing)
    assert interrupt.severity == Interrupt.Severity.CRITICAL
    assert interrupt.source == Interrupt.Source.POLICY
    assert interrupt.reason == "dose_mg = 2250 is over max_dose_mg = 2000"
    assert interrupt.proposal["dose_mg"] == 2250  # 20 mg/kg x 110 kg, over the 2,000 mg maximum
    # What was crossed, as data (issue 17): the console says it in words from the schema.
    assert interrupt.limit == {
        "field": "dose_mg",
        "value": 2250,
        "limit": 2000,
        "limit_field": "max_dose_mg",
    }
    assert presenting.limit_sentence(interrupt.limit, interrupt.proposal_schema) == (
        "Dose 2,250 mg is over the 2,000 mg maximum for this patient"
    )
    assert interrupt.address["main"]["blueprint"] == "healthcare-care"


def test_it_caps_the_dose_once_a_person_rejects_it_and_finishes_the_stack(django_user_model):
    roles_sync()
    operator = with_role(django_user_model.objects.create_user("otto"), "operator")
    run = drive(start("healthcare", patient=HEAVY_PATIENT))
    interrupt = Interrupt.objects.get(run__root_id=run.pk)

    interrupts.interrupt_decide(
        interrupt_id=interrupt.pk, actor=operator, decision="reject", comment="too much"
    )
    run = drive(run)

    assert run.state == State.SUCCEEDED, run.exit_detail
    dose = frame(run, "dosage-calculation").result
    assert dose["dose_mg"] == 2000 and dose["capped"]
    given = next(o for o in run.result["orders"] if o["drug"] == "vancomycin")
    assert given == {"drug": "vancomycin", "dose_mg": 2000, "status": "give"}


def test_it_flags_a_severe_pair_and_not_a_harmless_one():
    found = healthcare.screen(["warfarin", "aspirin", "metformin"], healthcare.INTERACTIONS)
    assert [(f["pair"], f["severity"]) for f in found] == [(["aspirin", "warfarin"], "major")]
    worst = healthcare.screen(["simvastatin", "clarithromycin"], healthcare.INTERACTIONS)
    assert worst[0]["severity"] == "contraindicated"
    assert healthcare.screen(["acetaminophen", "amoxicillin"], healthcare.INTERACTIONS) == []
    assert healthcare.mechanisms(["acetaminophen", "amoxicillin"]) == []
    assert len(healthcare.INTERACTIONS) >= 10
    # The mechanisms find what the lagging local table lacks: CYP2C9 inhibition of warfarin.
    predicted = healthcare.mechanisms(["warfarin", "fluconazole"])
    assert predicted[0]["severity"] == "major" and "CYP2C9" in predicted[0]["mechanism"]


def test_it_asks_a_person_about_a_severe_interaction():
    patient = {**HEAVY_PATIENT, "weight_kg": 70, "medications": ["phenelzine", "sertraline"]}
    run = drive(start("healthcare", patient=patient))

    checker = frame(run, "drug-interaction-checker")
    interrupt = Interrupt.objects.get(run=checker)
    assert interrupt.severity == Interrupt.Severity.CRITICAL
    assert interrupt.source == Interrupt.Source.AGENT
    assert "contraindicated" in interrupt.reason
    assert interrupt.proposal["hold"] == ["sertraline"]
    # The mechanism micro-loop ran beneath it and returned its prediction.
    molecular = frame(run, "molecular-interaction")
    assert molecular.state == State.SUCCEEDED and molecular.depth == 2


# --- CONCEPTS 15: education ----------------------------------------------------------------


ANSWERS = [
    {"item": f"Q{n}", "topic": topic, "difficulty": difficulty, "correct": False}
    for n, (topic, difficulty) in enumerate(
        [("fractions", 900), ("fractions", 1000), ("ratios", 950), ("ratios", 1100)] * 3
    )
]


def test_it_estimates_skill_monotone_in_the_number_of_right_answers():
    answers = [dict(a) for a in ANSWERS]
    abilities, masteries = [], []
    for n in range(len(answers) + 1):
        abilities.append(education.abilities(answers, grade=6)["overall"])
        masteries.append(education.mastery(answers)["overall"]["p"])
        if n < len(answers):
            answers[n]["correct"] = True  # one more right answer

    assert abilities == sorted(abilities) and len(set(abilities)) == len(abilities)
    assert masteries == sorted(masteries) and len(set(masteries)) == len(masteries)
    # The same number right, whichever items: the same Rasch ability.
    harder = [dict(a, correct=a["difficulty"] >= 1000) for a in ANSWERS]
    easier = [dict(a, correct=a["difficulty"] < 1000) for a in ANSWERS]
    assert sum(a["correct"] for a in harder) == sum(a["correct"] for a in easier)
    assert education.ability(harder, 960) == education.ability(easier, 960)


def test_it_refers_a_learner_far_behind_to_a_teacher():
    learner = {"grade": 8, "minutes_per_week": 60, "answers": ANSWERS}
    run = drive(start("education", learner=learner))

    engine_frame = frame(run, "personalization-engine")
    interrupt = Interrupt.objects.get(run=engine_frame)
    assert interrupt.severity == Interrupt.Severity.WARNING
    assert interrupt.proposal["referral"] == "teacher intervention"
    assert frame(run, "skill-assessment").result["mastery"]["overall"]["right"] == 0


# --- CONCEPTS 16: industrial ---------------------------------------------------------------


def _stream(spike_at: int | None = None) -> list[float]:
    """Alternating 9 and 11 mm/s: every window's mean is 10 and its deviation exactly 1."""
    readings = [9.0 if t % 2 else 11.0 for t in range(168)]
    if spike_at is not None:
        readings[spike_at] = 15.0  # 5 standard deviations above the window's mean
    return readings


def test_it_flags_an_injected_five_sigma_spike_as_critical():
    assert industrial.detect(_stream())["flagged"] == []

    found = industrial.detect(_stream(spike_at=100))

    assert found["critical"] and found["max_abs_z"] == 5.0
    assert [(f["index"], f["level"]) for f in found["flagged"]] == [(100, "critical")]


def test_it_escalates_an_injected_spike_as_critical():
    run = drive(start("industrial", plant={"readings": _stream(spike_at=120)}))

    detection = frame(run, "anomaly-detection")
    assert detection.depth == 2 and detection.state == State.INTERRUPTED
    interrupt = Interrupt.objects.get(run=detection)
    assert interrupt.severity == Interrupt.Severity.CRITICAL
    assert interrupt.proposal["action"] == "stop and inspect"
    assert interrupt.proposal["flagged"][0]["index"] == 120
    # The other branch of the parallel call went on: the supply chain was assessed.
    assert frame(run, "supply-chain-tracker").state == State.SUCCEEDED


def test_it_ranks_suppliers_by_risk():
    def supplier(name, delay, defects, single):
        return {
            "name": name,
            "part": name,
            "critical": True,
            "weighted_delay_days": delay,
            "defect_rate": defects,
            "single_source": single,
        }

    steady = supplier("steady", 0.0, 0.0, False)
    late = supplier("late", 6.0, 0.0, False)
    sloppy = supplier("sloppy", 6.0, 0.03, False)
    alone = supplier("alone", 6.0, 0.03, True)
    ranked = industrial.rank_suppliers([steady, late, alone, sloppy])

    assert [s["name"] for s in ranked] == ["alone", "sloppy", "late", "steady"]
    assert industrial.supplier_risk(steady) == 0.0
    assert industrial.supplier_risk(supplier("worst", 30.0, 0.5, True)) == 1.0
    assert industrial.risk_problems({"suppliers": ranked}) == []


def test_it_computes_supplier_statistics_from_shipments():
    shipments = [
        {"promised_days": 10, "actual_days": 10.0, "units": 100, "defects": 1},
        {"promised_days": 10, "actual_days": 14.0, "units": 100, "defects": 3},
    ]
    [stats] = industrial.supplier_stats(
        [{"name": "A", "part": "seal", "critical": True, "shipments": shipments}]
    )
    assert stats["on_time_rate"] == 0.5
    assert stats["defect_rate"] == 0.02
    assert stats["single_source"] is True
    assert 2.0 < stats["weighted_delay_days"] < 4.0  # the late shipment is the newer one


# --- CONCEPTS 17, 18: the shape of the stacks ----------------------------------------------


def _demo_blueprints(kind: str) -> list[str]:
    return [b.name for b in BLUEPRINTS.values() if b.domain in DEMO and b.kind == kind]


def test_it_reaches_every_sub_loop_from_exactly_one_main_loop():
    def reachable(name: str) -> set[str]:
        found: set[str] = set()
        for child in BLUEPRINTS[name].children:
            found |= {child, *reachable(child)}
        return found

    subs = _demo_blueprints("sub")
    assert sorted(subs) == sorted(
        [
            "drug-interaction-checker",
            "resource-optimizer",
            "personalization-engine",
            "content-curator",
            "predictive-maintenance",
            "supply-chain-tracker",
        ]
    )
    from_mains = {main: reachable(main) for main in _demo_blueprints("main")}
    for sub in subs:
        assert sum(sub in found for found in from_mains.values()) == 1, sub
    for micro in _demo_blueprints("micro"):
        assert sum(micro in found for found in from_mains.values()) == 1, micro


def test_it_declares_micro_loops_without_children():
    micros = _demo_blueprints("micro")
    assert sorted(micros) == sorted(
        [
            "molecular-interaction",
            "dosage-calculation",
            "skill-assessment",
            "anomaly-detection",
            "risk-assessment",
        ]
    )
    assert all(BLUEPRINTS[name].children == () for name in micros)
    with pytest.raises(DeclarationError, match="calls no children"):
        blueprint(
            "demo-test-bad-micro",
            kind="micro",
            domain="healthcare",
            children=("dosage-calculation",),
            phases=[Phase("x", call=("dosage-calculation",))],
            policy=Policy(exits=Exits(max_iterations=1)),
        )
    assert "demo-test-bad-micro" not in BLUEPRINTS


# --- Failures, slowdowns and breakers ------------------------------------------------------


def test_it_simulates_outages_in_spells_every_worker_agrees_on():
    assert not faults.in_spell("drug-database", "down", 0.0, now=0)
    assert faults.in_spell("drug-database", "down", 1.0, now=0)
    spells = [faults.in_spell("x", "down", 0.3, now=t * 60) for t in range(2000)]
    assert 0.25 < sum(spells) / len(spells) < 0.35
    assert spells == [faults.in_spell("x", "down", 0.3, now=t * 60 + 59) for t in range(2000)]


@override_settings(DEMO_FAILURE_RATE=1.0)
def test_it_opens_the_drug_database_breaker_when_it_keeps_failing():
    runs = [
        drive(start("healthcare", patient={**HEAVY_PATIENT, "weight_kg": 70})) for _ in range(3)
    ]

    breaker = CircuitBreaker.objects.get(name="drug-database-failures")
    assert breaker.state == CircuitBreaker.State.OPEN
    # The local interaction table answered meanwhile: every stack finished.
    assert [r.state for r in runs] == [State.SUCCEEDED] * 3
    checked = frame(runs[0], "drug-interaction-checker").iterations.get(number=1)
    call = checked.contributions.get(agent__name="drug-database")
    # Each call was tried three times: a 503 is transient (CONCEPTS 55, 58).
    assert [a["error_class"] for a in call.attempts] == ["server_error"] * 3
    assert "503" in call.attempts[0]["message"]
    # Open, it hears no broadcast: the next check goes without it.
    run = drive(start("healthcare", patient={**HEAVY_PATIENT, "weight_kg": 70}))
    screen = frame(run, "drug-interaction-checker").iterations.get(number=1)
    assert not Bid.objects.filter(iteration=screen, agent__name="drug-database").exists()
    assert run.state == State.SUCCEEDED


# --- The beat's top-up ---------------------------------------------------------------------


@override_settings(DEMO_ENABLED=True, DEMO_RUNS_PER_DOMAIN=2)
def test_it_tops_each_domain_up_to_its_working_runs(django_user_model):
    assert demo_keep_running() == 6
    assert demo_keep_running() == 0
    assert all(demo_working(domain=slug) == 2 for slug in DEMO)

    # A stack waiting for a person does not count: the domain takes a new case beside it.
    waiting = LoopRun.objects.filter(domain__slug="industrial", depth=0).first()
    LoopRun.objects.filter(pk=waiting.pk).update(state=State.INTERRUPTED)
    # Nothing starts in a halted domain (run_start refuses; that is expected).
    admin = with_role(django_user_model.objects.create_user("ada"), "admin")
    halts.halt_engage(actor=admin, scope="domain:education", reason="drill")

    assert demo_keep_running() == 1
    assert demo_working(domain="industrial") == 2
    assert LoopRun.objects.filter(domain__slug="education", depth=0).count() == 2


def test_it_starts_nothing_while_the_demo_is_off():
    assert demo_keep_running() == 0
    assert not LoopRun.objects.filter(domain__slug__in=DEMO).exists()


# --- On a real worker ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_runs_every_domain_stack_to_its_end_on_a_worker(celery_worker):
    sync_declarations()
    runs = {slug: start(slug) for slug in DEMO}

    def ended():
        rows = LoopRun.objects.filter(pk__in=[r.pk for r in runs.values()])
        return all(r.is_terminal for r in rows)

    wait_for(ended, timeout=90)
    for slug, run in runs.items():
        run.refresh_from_db()
        assert run.state == State.SUCCEEDED, (slug, run.exit_reason, run.exit_detail)
        frames = LoopRun.objects.filter(root_id=run.pk)
        assert {f.depth for f in frames} == {0, 1, 2}
        assert all(f.state == State.SUCCEEDED for f in frames)
        # Every child's result came back up into its parent's context (CONCEPTS 19).
        for child in frames.exclude(parent=None):
            returned = child.parent.context["children"][child.blueprint.name]
            assert returned["result"] == child.result
    assert runs["healthcare"].result["placement"]["status"] in ("admitted", "boarding")
    assert runs["education"].result["resources"]
    assert runs["industrial"].result["priority"]


# --- Settings ------------------------------------------------------------------------------


def _settings_of(**env: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.DEMO_ENABLED, 'demo.declarations' in s.LOOP_DECLARATIONS, "
        "'demo-keep-running' in s.CELERY_BEAT_SCHEDULE)"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "DATABASE_URL"))}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "DJANGO_SETTINGS_MODULE": "console.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("value", ["often", "1.5", "-0.1", "nan"])
def test_it_stops_on_a_bad_rate_naming_the_variable(value):
    result = _settings_of(DEMO_FAILURE_RATE=value)

    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert last_line.startswith("common.env.EnvError: ")
    assert "DEMO_FAILURE_RATE" in last_line


def test_it_runs_the_demo_by_default_only_on_the_embedded_database():
    assert _settings_of().stdout.split() == ["True", "True", "True"]
    real = _settings_of(DATABASE_URL="postgres://console@db.example/console")
    assert real.stdout.split() == ["False", "False", "False"]
    assert _settings_of(DEMO_ENABLED="false").stdout.split() == ["False", "False", "False"]


# --- Retention ---------------------------------------------------------------------------


def test_it_prunes_finished_demo_stacks_past_the_retention_and_keeps_the_rest():
    from datetime import timedelta

    from django.utils import timezone

    from demo.services import demo_prune

    old = drive(start("healthcare"))
    recent = drive(start("education"))
    live = start("industrial")
    LoopRun.objects.filter(root_id=old.pk).update(finished_at=timezone.now() - timedelta(hours=30))
    LoopRun.objects.filter(pk=recent.pk).update(finished_at=timezone.now() - timedelta(hours=1))
    assert old.is_terminal and recent.is_terminal
    frames = LoopRun.objects.filter(root_id=old.pk).count()

    pruned = demo_prune()

    assert pruned == 1 and frames >= 3
    assert not LoopRun.objects.filter(root_id=old.pk).exists()
    assert LoopRun.objects.filter(pk__in=[recent.pk, live.pk]).count() == 2
