"""The demo's in-process agents (loops.declare.python_agent): each bids on what it can do and
computes its part with demo.healthcare, demo.education or demo.industrial. Agents that stand
for an external system go through demo.faults first, so they fail and slow down; each has a
local stand-in of lower confidence that keeps the loop going while its breaker is open.

Where a person should decide (a dose over the maximum is the dosage loop's policy; a severe
interaction, a learner far behind, a critical anomaly and a risky supplier are asked for in
the agent's Outcome), the proposal carries the action; told "rejected by …", the agent
proposes the safe alternative instead of asking again.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from typing import Any

from django.conf import settings

from demo import education, faults, healthcare, industrial
from loops.declare import python_agent
from loops.messages import Bid, Decline, Escalation, Outcome, Task


class DemoAgent(ABC):
    confidence = 0.8
    system = ""  # the external system this agent calls, if any
    cost = 0.0  # what one call costs (an external lookup is billed)

    def bid(self, task: Task) -> Bid | Decline | None:
        return Bid(confidence=self.confidence, est_cost=self.cost)

    def perform(self, task: Task) -> Outcome:
        if self.system:
            faults.external_call(self.system)
        return self.work(task)

    @abstractmethod
    def work(self, task: Task) -> Outcome:
        """Each agent's own computation: a demo agent without one cannot be made."""


def _given(task: Task) -> dict[str, Any]:
    return task.context.get("input") or {}


def _phases(task: Task) -> dict[str, Any]:
    return task.context.get("phases", {})


@python_agent("demo.second-opinion")
class SecondOpinion(DemoAgent):
    """A hosted model behind a rate limit: it hears every main- and sub-loop broadcast but
    mostly cannot answer within the bid window, so the loop waits the window out (CONCEPTS
    23) — this is what paces the demo (DEMO_PACE_SECONDS). When it does answer, it has
    nothing to add to a routine case."""

    def bid(self, task: Task) -> Bid | Decline | None:
        if settings.DEMO_PACE_SECONDS == 0 or random.random() < 0.25:  # noqa: S311
            return Decline("no second opinion needed: a routine case")
        return None  # rate-limited: no answer in the window

    def work(self, task: Task) -> Outcome:
        return Outcome(output=None)


# --- Healthcare ----------------------------------------------------------------------------


@python_agent("demo.triage-nurse")
class TriageNurse(DemoAgent):
    """Admits the run's patient: generated, with any fields the run's input gives."""

    confidence = 0.9

    def work(self, task: Task) -> Outcome:
        rng = faults.rng_for(task, "patient")
        dose_hazard, interaction_hazard = faults.hazard(rng), faults.hazard(rng)
        patient = healthcare.generate_patient(
            rng, dose_hazard=dose_hazard, interaction_hazard=interaction_hazard
        )
        patient = healthcare.complete_patient({**patient, **_given(task).get("patient", {})})
        order = patient["order"]
        why = f"{patient['weight_kg']} kg, ordered {order['drug']} {order['mg_per_kg']} mg/kg"
        return Outcome(output=patient, rationale=why)


class InteractionScreen(DemoAgent):
    table = healthcare.INTERACTIONS
    source = ""

    def work(self, task: Task) -> Outcome:
        drugs = healthcare.drug_list(_given(task))
        found = healthcare.screen(drugs, self.table)
        output = {"drugs": drugs, "found": found, "source": self.source}
        return Outcome(output=output, cost=self.cost, rationale=f"{len(found)} known pairs")


@python_agent("demo.drug-database")
class DrugDatabase(InteractionScreen):
    confidence, system, cost = 0.9, "drug-database", 0.002
    source = "drug database (live)"


@python_agent("demo.interaction-table")
class InteractionTable(InteractionScreen):
    confidence = 0.7
    table = {k: v for k, v in healthcare.INTERACTIONS.items() if k not in healthcare.CACHE_MISSING}
    source = "local interaction table (lags the database)"


@python_agent("demo.mechanism-model")
class MechanismModel(DemoAgent):
    """Predicts interactions from enzymes and effects (the molecular-interaction loop)."""

    confidence = 0.85

    def work(self, task: Task) -> Outcome:
        drugs = _given(task)["drugs"]
        return Outcome(output={"drugs": drugs, "predicted": healthcare.mechanisms(drugs)})


@python_agent("demo.clinical-pharmacologist")
class ClinicalPharmacologist(DemoAgent):
    """Weighs the table's pairs and the predicted mechanisms; a severe pair goes to a person."""

    confidence = 0.85

    def work(self, task: Task) -> Outcome:
        screen = _phases(task)["screen"]
        predicted = _phases(task)["mechanism"]["molecular-interaction"]["predicted"]
        result = healthcare.assess(screen["drugs"], screen["found"], predicted)
        severe = [p for p in result["interactions"] if p["severity"] in healthcare.SEVERE]
        if not severe:
            return Outcome(output={**result, "action": "continue"})
        if said := faults.rejected(task):
            output = {**result, "action": "continue with monitoring", "hold": [], "override": said}
            return Outcome(output=output, rationale="a person decided against holding")
        worst = severe[0]
        reason = f"{worst['severity']} interaction: {' + '.join(worst['pair'])} ({worst['why'][0]})"
        return Outcome(
            output={**result, "action": "hold"},
            escalate=Escalation(
                reason=reason,
                severity="critical",
                rationale=f"hold {', '.join(result['hold'])} until a clinician confirms",
            ),
        )


class Doser(DemoAgent):
    renal = False

    def work(self, task: Task) -> Outcome:
        patient = _given(task)
        said = faults.rejected(task)
        dose = healthcare.compute_dose(patient, renal=self.renal, cap=bool(said))
        why = (
            f"{dose['mg_per_kg']:g} mg/kg x {dose['weight_kg']:g} kg"
            + (f" x renal factor {dose['renal_factor']:g}" if self.renal else "")
            + (" capped at the maximum after a rejection" if said else "")
        )
        return Outcome(output=dose, rationale=why)


@python_agent("demo.weight-based-doser")
class WeightBasedDoser(Doser):
    def bid(self, task: Task) -> Bid | Decline | None:
        if _given(task)["order"]["drug"] not in healthcare.FORMULARY:
            return Decline("the drug is not in the formulary")
        return Bid(confidence=0.8)


@python_agent("demo.renal-doser")
class RenalDoser(Doser):
    """Adjusts renally cleared drugs to the kidney function (Giusti-Hayton)."""

    renal = True

    def bid(self, task: Task) -> Bid | Decline | None:
        patient = _given(task)
        drug = healthcare.FORMULARY.get(patient["order"]["drug"])
        if drug is None or drug.fe == 0:
            return Decline("not a renally cleared drug")
        if patient["crcl_ml_min"] >= 60:
            return Decline(f"creatinine clearance {patient['crcl_ml_min']:g} mL/min needs none")
        return Bid(confidence=0.9)


@python_agent("demo.order-clerk")
class OrderClerk(DemoAgent):
    """Turns the medication-safety results into the order set the ward works from."""

    confidence = 0.9

    def work(self, task: Task) -> Outcome:
        patient = _phases(task)["admit"]
        safety = _phases(task)["medication-safety"]
        checked, dose = safety["drug-interaction-checker"], safety["dosage-calculation"]
        held = set(checked.get("hold", []))
        orders = [
            {"drug": d, "status": "held" if d in held else "continue"}
            for d in patient["medications"]
        ]
        given = dose["drug"] not in held
        orders.append(
            {
                "drug": dose["drug"],
                "dose_mg": dose["dose_mg"],
                "status": "give" if given else "held",
            }
        )
        monitoring = list(checked.get("monitoring", []))
        if patient["crcl_ml_min"] < 60:
            monitoring.append("renal function")
        output = {
            "patient": patient["id"],
            "acuity": patient["acuity"],
            "isolation": patient["isolation"],
            "orders": orders,
            "monitoring": monitoring,
            "infusion_minutes": dose["infusion_minutes"] if given else 0,
        }
        return Outcome(output=output)


@python_agent("demo.bed-manager")
class BedManager(DemoAgent):
    """Places the patient: ward by acuity, side room for isolation, least-loaded nurse."""

    confidence = 0.85

    def work(self, task: Task) -> Outcome:
        request = _given(task)
        wards = healthcare.generate_hospital(faults.rng_for(task, "hospital"))
        placed = healthcare.allocate(request, wards)
        return Outcome(output={"patient": request["patient"], **placed})


@python_agent("demo.care-planner")
class CarePlanner(DemoAgent):
    confidence = 0.9

    def work(self, task: Task) -> Outcome:
        phases = _phases(task)
        orders, bed = phases["orders"], phases["allocate"]["resource-optimizer"]
        where = (
            f"{bed['ward']} bed {bed['bed']}" if bed.get("bed") else f"boarding for {bed['ward']}"
        )
        plan = {
            "patient": orders["patient"],
            "placement": bed,
            "orders": orders["orders"],
            "monitoring": orders["monitoring"],
            "summary": f"{orders['patient']}: {where}; {len(orders['orders'])} medication orders",
        }
        return Outcome(output=plan, rationale=plan["summary"])


# --- Education -----------------------------------------------------------------------------


@python_agent("demo.learner-profiler")
class LearnerProfiler(DemoAgent):
    confidence = 0.9

    def work(self, task: Task) -> Outcome:
        rng = faults.rng_for(task, "learner")
        learner = education.generate_learner(rng, behind=faults.hazard(rng))
        learner.update(_given(task).get("learner", {}))
        return Outcome(output=learner, rationale=f"{len(learner['answers'])} answers so far")


@python_agent("demo.ability-estimator")
class AbilityEstimator(DemoAgent):
    """An ability per topic on the Elo scale (Rasch, MAP); surer with more answers."""

    def bid(self, task: Task) -> Bid | Decline | None:
        n = len(_given(task).get("answers", []))
        return Bid(confidence=round(n / (n + 5), 2)) if n else Decline("no answers yet")

    def work(self, task: Task) -> Outcome:
        learner = _given(task)
        return Outcome(
            output={"ability": education.abilities(learner["answers"], learner["grade"])}
        )


@python_agent("demo.mastery-estimator")
class MasteryEstimator(DemoAgent):
    confidence = 0.75

    def work(self, task: Task) -> Outcome:
        return Outcome(output={"mastery": education.mastery(_given(task)["answers"])})


@python_agent("demo.path-planner")
class PathPlanner(DemoAgent):
    """Focus topics and target difficulty; a learner far behind goes to a teacher."""

    confidence = 0.85

    def work(self, task: Task) -> Outcome:
        estimates = _phases(task)["assess"]["skill-assessment"]
        plan = education.plan_path(_given(task), estimates)
        if not plan["at_risk"]:
            return Outcome(output={**plan, "referral": None})
        if said := faults.rejected(task):
            return Outcome(output={**plan, "referral": None, "override": said})
        overall = estimates["mastery"]["overall"]
        return Outcome(
            output={**plan, "referral": "teacher intervention"},
            escalate=Escalation(
                reason=f"learner {plan['learner']} is far behind grade {plan['grade']} "
                f"({overall['right']} of {overall['n']} right)",
                severity="warning",
                rationale="a teacher should decide on an intervention before the path goes out",
            ),
        )


class Curator(DemoAgent):
    newest_missing_days = 0  # the cache has not seen what was added since

    def work(self, task: Task) -> Outcome:
        plan = _given(task)["personalization-engine"]
        catalogue = education.generate_catalogue(faults.rng_for(task, "catalogue"), plan["grade"])
        catalogue = [c for c in catalogue if c["added_days_ago"] >= self.newest_missing_days]
        resources = education.curate(plan, catalogue)
        return Outcome(
            output={"resources": resources, "source": self.system or "cache"}, cost=self.cost
        )


@python_agent("demo.lms-connector")
class LmsConnector(Curator):
    confidence, system, cost = 0.85, "learning-management-system", 0.001


@python_agent("demo.catalogue-cache")
class CatalogueCache(Curator):
    confidence, newest_missing_days = 0.6, 60


@python_agent("demo.path-publisher")
class PathPublisher(DemoAgent):
    """Publishes every curated resource; once told it is too long, trims to the week."""

    confidence = 0.9

    def work(self, task: Task) -> Outcome:
        plan = _phases(task)["personalize"]["personalization-engine"]
        resources = _phases(task)["curate"]["content-curator"]["resources"]
        trim = any("drop the lowest-scored" in line for line in task.feedback)
        return Outcome(output=education.publish(plan, resources, trim=trim))


# --- Industrial ----------------------------------------------------------------------------


class Survey(DemoAgent):
    lag_readings = 0  # how far behind the live stream this source is

    def work(self, task: Task) -> Outcome:
        rng = faults.rng_for(task, "plant")
        spike, risky = faults.hazard(rng), faults.hazard(rng)
        plant = industrial.generate_plant(rng, spike=spike, risky_supplier=risky)
        plant.update(_given(task).get("plant", {}))
        if self.lag_readings:
            plant["readings"] = plant["readings"][: -self.lag_readings]
        plant["source"] = self.system or f"historian ({self.lag_readings} h behind)"
        return Outcome(output=plant, cost=self.cost)


@python_agent("demo.sensor-gateway")
class SensorGateway(Survey):
    confidence, system, cost = 0.9, "sensor-gateway", 0.001


@python_agent("demo.plant-historian")
class PlantHistorian(Survey):
    confidence, lag_readings = 0.6, 12


@python_agent("demo.zscore-detector")
class ZscoreDetector(DemoAgent):
    """Rolling z-scores; a reading 5 standard deviations out stops the machine, if a
    person agrees."""

    confidence = 0.9

    def bid(self, task: Task) -> Bid | Decline | None:
        if len(_given(task).get("readings", [])) <= industrial.WINDOW:
            return Decline("too few readings for the rolling window")
        return Bid(confidence=self.confidence)

    def work(self, task: Task) -> Outcome:
        plant = _given(task)
        found = {"machine": plant["machine"]["id"], **industrial.detect(plant["readings"])}
        if not found["critical"]:
            return Outcome(output={**found, "action": "none"})
        if said := faults.rejected(task):
            output = {**found, "action": "keep running; inspect at the next stop", "override": said}
            return Outcome(output=output)
        worst = max(found["flagged"], key=lambda f: abs(f["z"]))
        return Outcome(
            output={**found, "action": "stop and inspect"},
            escalate=Escalation(
                reason=f"critical vibration on {found['machine']}: z = {worst['z']:g} "
                f"at hour {worst['index']}",
                severity="critical",
                rationale="a reading this far out of the recent pattern can mean a failing "
                "bearing; stopping the machine needs a person's decision",
            ),
        )


@python_agent("demo.rul-estimator")
class RulEstimator(DemoAgent):
    """Remaining useful life: the wear trend, without critical readings, to the damage limit."""

    confidence = 0.8

    def work(self, task: Task) -> Outcome:
        plant = _given(task)
        found = _phases(task)["detect"]["anomaly-detection"]
        skip = {f["index"] for f in found["flagged"] if f["level"] == "critical"}
        life = industrial.remaining_life(plant["readings"], skip, plant["interval_hours"])
        anomalies = {k: found[k] for k in ("critical", "max_abs_z", "action")}
        return Outcome(output={"machine": found["machine"], **life, "anomalies": anomalies})


class Tracker(DemoAgent):
    unbooked = 0  # the latest deliveries this source has not booked yet

    def work(self, task: Task) -> Outcome:
        suppliers = _given(task)["suppliers"]
        if self.unbooked:
            suppliers = [{**s, "shipments": s["shipments"][: -self.unbooked]} for s in suppliers]
        stats = industrial.supplier_stats(suppliers)
        output = {
            "machine": _given(task)["machine"],
            "suppliers": stats,
            "source": self.system or "erp",
        }
        return Outcome(output=output, cost=self.cost)


@python_agent("demo.supplier-portal")
class SupplierPortal(Tracker):
    confidence, system, cost = 0.85, "supplier-portal", 0.001


@python_agent("demo.erp-ledger")
class ErpLedger(Tracker):
    confidence, unbooked = 0.6, 2


@python_agent("demo.supplier-risk-model")
class SupplierRiskModel(DemoAgent):
    """Ranks suppliers by risk; a risky only source of a critical part goes to a person."""

    confidence = 0.85

    def work(self, task: Task) -> Outcome:
        ranked = industrial.rank_suppliers(_given(task)["suppliers"])
        risky = [s for s in ranked if s["critical"] and s["risk"] >= industrial.RISK_LIMIT]
        output: dict[str, Any] = {"suppliers": ranked, "action": "none"}
        if not risky:
            return Outcome(output=output)
        if said := faults.rejected(task):
            return Outcome(output={**output, "action": "keep the supplier", "override": said})
        worst = risky[0]
        return Outcome(
            output={**output, "action": f"dual-source the {worst['part']}"},
            escalate=Escalation(
                reason=f"{worst['name']}, the only source of the {worst['part']}, scores risk "
                f"{worst['risk']:g} (limit {industrial.RISK_LIMIT:g})",
                severity="warning",
                rationale=f"{worst['weighted_delay_days']:g} days late on average, "
                f"{worst['defect_rate']:.1%} defective",
            ),
        )


@python_agent("demo.maintenance-planner")
class MaintenancePlanner(DemoAgent):
    """The work order: how urgent, and from which supplier to order the part."""

    confidence = 0.9

    def work(self, task: Task) -> Outcome:
        assessed = _phases(task)["assess"]
        wear = assessed["predictive-maintenance"]
        ranked = assessed["supply-chain-tracker"]["risk-assessment"]["suppliers"]
        critical = [s for s in ranked if s["critical"]]
        supplier = min(critical, key=lambda s: (s["risk"], s["name"])) if critical else None
        lead_hours = 24 * (supplier["lead_time_days"] if supplier else 14)
        rul = wear["rul_hours"]
        if wear["anomalies"]["action"] == "stop and inspect" or wear["zone"] == "D":
            priority = "immediate"
        elif rul is not None and rul < lead_hours + 7 * 24:
            priority = "order the part now"
        else:
            priority = "planned"
        order = {
            "machine": wear["machine"],
            "priority": priority,
            "zone": wear["zone"],
            "rul_hours": rul,
            "part": supplier["part"] if supplier else None,
            "order_from": supplier["name"] if supplier else None,
        }
        return Outcome(output=order, rationale=f"{wear['machine']}: {priority}")
