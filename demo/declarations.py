"""The demo domains (DESIGN.md section 7), their agents, validators, loop blueprints and
circuit breakers. Settings name this module in LOOP_DECLARATIONS when DEMO_ENABLED is on.

    healthcare-care            admit → medication-safety → orders → allocate → care-plan
      drug-interaction-checker   screen → mechanism → assess
        molecular-interaction      mechanism
        <realm>:second-opinion     mechanism too, federated: the regional pharmacy's review
                                   in its own realm (DEMO_PHARMACY_REALM), a remote frame
      dosage-calculation         compute (a micro-loop the main loop calls directly)
      resource-optimizer         allocate
    education-learning         enrol → personalize → curate → publish (a budget that asks)
      personalization-engine     assess → plan
        skill-assessment           estimate
      content-curator            curate
    industrial-operations      survey → assess (both subs at once) → schedule
      predictive-maintenance     detect → forecast
        anomaly-detection          detect
      supply-chain-tracker       track → risk
        risk-assessment            score

Main- and sub-loop broadcasts also reach the domain's rate-limited second-opinion agent,
whose silence makes each such phase wait its bid window: DEMO_PACE_SECONDS paces the demo.
Micro-loops are quick: a 0.5 s bid window that every agent answers at once.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings

from common.env import env_slug
from demo import agents as _agents  # noqa: F401 — registers the python_agent implementations
from demo import education, healthcare, industrial
from demo.schemas import DOSE_SCHEMA
from loops.declare import agent, blueprint, breaker, domain, validator
from loops.messages import Verdict
from loops.specs import Escalate, EscalateTo, Exits, Phase, Policy, Remind, Retry

PACE_MS = round(settings.DEMO_PACE_SECONDS * 1000)
SLOW_MS = round(settings.DEMO_SLOW_SECONDS * 1000)
DECIDE = Escalate(deadline_s=settings.DEMO_DECISION_SECONDS, default_action="reject")
# Critical anomalies climb a ladder (issue 18): the on-call group at 1/5, admins at 1/2.
LADDER = (Remind(DECIDE.deadline_s / 5, to="group:on-call"), EscalateTo(DECIDE.deadline_s / 2))
# Transient failures of external systems are tried three times, 250 ms apart and more.
RETRY = Retry(max_attempts=3, base_ms=250, cap_ms=2000)
# The realm whose regional pharmacy gives the interaction checks a second opinion, as a
# remote frame (`./bin/console --federated` sets it; README: The demo); unset: none.
PHARMACY_REALM = (
    env_slug("DEMO_PHARMACY_REALM", "") if os.environ.get("DEMO_PHARMACY_REALM") else ""
)
SECOND_OPINION = (f"{PHARMACY_REALM}:second-opinion",) if PHARMACY_REALM else ()

domain("healthcare", "Healthcare", "Patient care: drug interactions, dosing and beds (demo).")
domain("education", "Education", "Personalised learning paths and content (demo).")
domain("industrial", "Industrial", "Predictive maintenance and supply chains (demo).")


def _agents_of(domain_slug: str, *entries: tuple[str, tuple[str, ...]]) -> None:
    for name, capabilities in entries:
        agent(domain_slug, name, implementation=f"demo.{name}", capabilities=capabilities)


_agents_of(
    "healthcare",
    ("triage-nurse", ("intake",)),
    ("drug-database", ("interactions",)),
    ("interaction-table", ("interactions",)),
    ("mechanism-model", ("molecular",)),
    ("clinical-pharmacologist", ("pharmacology",)),
    ("weight-based-doser", ("dosing",)),
    ("renal-doser", ("dosing",)),
    ("order-clerk", ("orders",)),
    ("bed-manager", ("beds",)),
    ("care-planner", ("care-planning",)),
    (
        "second-opinion",
        ("intake", "interactions", "pharmacology", "orders", "beds", "care-planning"),
    ),
)
_agents_of(
    "education",
    ("learner-profiler", ("enrolment",)),
    ("ability-estimator", ("psychometrics",)),
    ("mastery-estimator", ("psychometrics",)),
    ("path-planner", ("pedagogy",)),
    ("lms-connector", ("curation",)),
    ("catalogue-cache", ("curation",)),
    ("path-publisher", ("publishing",)),
    ("second-opinion", ("enrolment", "pedagogy", "curation", "publishing")),
)
_agents_of(
    "industrial",
    ("sensor-gateway", ("telemetry",)),
    ("plant-historian", ("telemetry",)),
    ("zscore-detector", ("anomaly",)),
    ("rul-estimator", ("reliability",)),
    ("supplier-portal", ("logistics",)),
    ("erp-ledger", ("logistics",)),
    ("supplier-risk-model", ("risk",)),
    ("maintenance-planner", ("planning",)),
    ("second-opinion", ("telemetry", "reliability", "logistics", "planning")),
)


# --- Validators: each says what to correct ------------------------------------------------


def _verdict(problems: list[str]) -> Verdict:
    return Verdict(ok=not problems, score=0.0 if problems else 1.0, feedback="; ".join(problems))


@validator("demo.dose-consistent")
def dose_consistent(value: Any, context: dict[str, Any]) -> Verdict:
    """Positive, and mg/kg x weight (x the renal factor) to within one measurable step."""
    return _verdict(healthcare.dose_problems(value))


@validator("demo.plan-complete")
def plan_complete(value: Any, context: dict[str, Any]) -> Verdict:
    problems = []
    if not isinstance(value, dict) or not value.get("orders"):
        problems.append("the care plan lists no medication orders")
    elif not value.get("placement", {}).get("status"):
        problems.append("the care plan does not say where the patient goes")
    return _verdict(problems)


@validator("demo.estimates-in-range")
def estimates_in_range(value: Any, context: dict[str, Any]) -> Verdict:
    return _verdict(education.estimate_problems(value))


@validator("demo.path-fits")
def path_fits(value: Any, context: dict[str, Any]) -> Verdict:
    """The learning path fits the learner's minutes a week."""
    return _verdict(education.path_problems(value))


@validator("demo.risk-ranked")
def risk_ranked(value: Any, context: dict[str, Any]) -> Verdict:
    return _verdict(industrial.risk_problems(value))


# --- Blueprints ---------------------------------------------------------------------------


def _loop(name: str, kind: str, domain_slug: str, phases: list[Phase], **fields: Any) -> None:
    """A demo blueprint: paced broadcasts in main- and sub-loops, quick micro-loops; every
    agent able to bid is selected, the most confident result wins; escalations wait
    DEMO_DECISION_SECONDS for a person, then are rejected."""
    paced = kind != "micro"
    exits = Exits(
        quality=("validated",),
        max_iterations=fields.pop("max_iterations", 15 if kind == "main" else 10),
        # The stack's deadline: children inherit the main loop's.
        deadline_s=3600 + 3 * settings.DEMO_DECISION_SECONDS if kind == "main" else None,
        budget=fields.pop("budget", None),
    )
    policy = Policy(
        exits=exits,
        retry=RETRY,
        validation_rounds=3,
        escalation=fields.pop("escalation", DECIDE),
        on_validation_exhausted=fields.pop("on_validation_exhausted", "fail"),
        on_budget=fields.pop("on_budget", "exhaust"),
    )
    fields.setdefault("selection", "all")
    blueprint(
        name,
        kind=kind,
        domain=domain_slug,
        phases=phases,
        policy=policy,
        bid_window_ms=PACE_MS if paced else 500,
        # Past the window, room for a slow call and its retries.
        gather_deadline_ms=(PACE_MS if paced else 0) + 3 * SLOW_MS + 30_000,
        **fields,
    )


def _ask(name: str, capability: str, **fields: Any) -> Phase:
    return Phase(name, task_type=f"demo.{name}", capabilities=(capability,), **fields)


_loop(
    "healthcare-care",
    "main",
    "healthcare",
    [
        _ask("admit", "intake"),
        Phase("medication-safety", call=("drug-interaction-checker", "dosage-calculation")),
        _ask("orders", "orders"),
        Phase("allocate", call=("resource-optimizer",)),
        _ask("care-plan", "care-planning", validators=("demo.plan-complete",)),
    ],
    children=("drug-interaction-checker", "dosage-calculation", "resource-optimizer"),
    description="A patient's admission: medication safety, orders, a bed, the care plan.",
)
_loop(
    "drug-interaction-checker",
    "sub",
    "healthcare",
    [
        _ask("screen", "interactions"),
        # Federated, the regional pharmacy reviews the screen at the same time, in its realm.
        Phase("mechanism", call=("molecular-interaction", *SECOND_OPINION)),
        _ask("assess", "pharmacology"),
    ],
    children=("molecular-interaction", *SECOND_OPINION),
    description="Known interacting pairs, predicted mechanisms"
    + (f", the {PHARMACY_REALM} realm's second opinion" if PHARMACY_REALM else "")
    + "; a severe pair asks a person.",
)
_loop(
    "molecular-interaction",
    "micro",
    "healthcare",
    [_ask("mechanism", "molecular")],
    description="Interactions predicted from enzymes (CYP inhibition) and shared effects.",
)
_loop(
    "dosage-calculation",
    "micro",
    "healthcare",
    [_ask("compute", "dosing", output_schema=DOSE_SCHEMA, validators=("demo.dose-consistent",))],
    selection="best",
    # A dose over the drug's maximum waits for a person (a critical interrupt); a dose over
    # twice the maximum needs two people to approve it (issue 18; any one reject ends it).
    escalation=Escalate(
        over={"dose_mg": "max_dose_mg"},
        approvals=2,
        quorum_over={"dose_mg": ("max_dose_mg", 2.0)},
        on_reject="the doser then proposes no more than the drug's maximum",
        deadline_s=settings.DEMO_DECISION_SECONDS,
        default_action="reject",
    ),
    on_validation_exhausted="interrupt",
    description="Weight-based dose (renally adjusted where needed) against the maximum dose.",
)
_loop(
    "resource-optimizer",
    "sub",
    "healthcare",
    [_ask("allocate", "beds")],
    description="A bed by acuity and isolation, the least-loaded nurse, an infusion pump.",
)

_loop(
    "education-learning",
    "main",
    "education",
    [
        _ask("enrol", "enrolment"),
        Phase("personalize", call=("personalization-engine",)),
        Phase("curate", call=("content-curator",)),
        _ask("publish", "publishing", validators=("demo.path-fits",)),
    ],
    children=("personalization-engine", "content-curator"),
    budget=education.PATH_BUDGET,  # over it, a person is asked to extend it (issue 18)
    on_budget="ask",
    description="A learner's next week: skills, focus topics, content, a path that fits.",
)
_loop(
    "personalization-engine",
    "sub",
    "education",
    [Phase("assess", call=("skill-assessment",)), _ask("plan", "pedagogy")],
    children=("skill-assessment",),
    description="Focus topics at 70 % expected success; a learner far behind asks a teacher.",
)
_loop(
    "skill-assessment",
    "micro",
    "education",
    [_ask("estimate", "psychometrics", validators=("demo.estimates-in-range",))],
    merge="merge_objects",
    description="Ability on the Elo scale (Rasch) and Beta mastery, per topic, from answers.",
)
_loop(
    "content-curator",
    "sub",
    "education",
    [_ask("curate", "curation")],
    description="Well-rated resources near the target difficulty of each focus topic.",
)

_loop(
    "industrial-operations",
    "main",
    "industrial",
    [
        _ask("survey", "telemetry"),
        Phase("assess", call=("predictive-maintenance", "supply-chain-tracker")),
        _ask("schedule", "planning"),
    ],
    children=("predictive-maintenance", "supply-chain-tracker"),
    description="A machine's week: anomalies, wear, spare-part suppliers, the work order.",
)
_loop(
    "predictive-maintenance",
    "sub",
    "industrial",
    [Phase("detect", call=("anomaly-detection",)), _ask("forecast", "reliability")],
    children=("anomaly-detection",),
    description="Remaining useful life from the vibration trend (ISO 10816 zones).",
)
_loop(
    "anomaly-detection",
    "micro",
    "industrial",
    [_ask("detect", "anomaly")],
    escalation=Escalate(deadline_s=DECIDE.deadline_s, ladder=LADDER),  # then rejects
    description="Rolling z-scores; |z| ≥ 5 is critical and asks a person to stop the machine.",
)
_loop(
    "supply-chain-tracker",
    "sub",
    "industrial",
    [_ask("track", "logistics"), Phase("risk", call=("risk-assessment",))],
    children=("risk-assessment",),
    description="On-time rate, weighted delay and defects of each spare-part supplier.",
)
_loop(
    "risk-assessment",
    "micro",
    "industrial",
    [_ask("score", "risk", validators=("demo.risk-ranked",))],
    description="Supplier risk: 0.5 lateness + 0.3 defects + 0.2 single source.",
)


# --- Breakers on the external systems (agent scope: the local stand-in takes over) -------

breaker(
    "drug-database-failures",
    scope="agent:healthcare/drug-database",
    metric="consecutive_failures",
    threshold=3,
    cooldown_s=30,
)
breaker(
    "lms-error-rate",
    scope="agent:education/lms-connector",
    metric="error_rate",
    threshold=0.5,
    window_s=60,
    min_calls=4,
    cooldown_s=30,
)
breaker(
    "sensor-gateway-latency",
    scope="agent:industrial/sensor-gateway",
    metric="latency",
    # Mean latency over the minute: ordinary calls are quick, a slow spell's take
    # DEMO_SLOW_SECONDS each.
    threshold=max(250, 0.4 * SLOW_MS),
    window_s=60,
    min_calls=3,
    cooldown_s=30,
)
breaker(
    "supplier-portal-failures",
    scope="agent:industrial/supplier-portal",
    metric="consecutive_failures",
    threshold=3,
    cooldown_s=30,
)
