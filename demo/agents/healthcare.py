"""The healthcare domain's agents: admission, the interaction screen, dosing, orders, beds
and the care plan, computed by demo.healthcare.
"""

from __future__ import annotations

from demo import faults, healthcare
from demo.agents.base import DemoAgent, given, phase_results
from loops.declare import python_agent
from loops.messages import Bid, Decline, Escalation, Outcome, Task


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
        patient = healthcare.complete_patient({**patient, **given(task).get("patient", {})})
        order = patient["order"]
        why = f"{patient['weight_kg']} kg, ordered {order['drug']} {order['mg_per_kg']} mg/kg"
        return Outcome(output=patient, rationale=why)


class InteractionScreen(DemoAgent):
    table = healthcare.INTERACTIONS
    source = ""

    def work(self, task: Task) -> Outcome:
        drugs = healthcare.drug_list(given(task))
        found = healthcare.screen(drugs, self.table)
        output = {
            "patient": given(task).get("id"),
            "drugs": drugs,
            "found": found,
            "source": self.source,
        }
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
        drugs = given(task)["drugs"]
        return Outcome(output={"drugs": drugs, "predicted": healthcare.mechanisms(drugs)})


@python_agent("demo.clinical-pharmacologist")
class ClinicalPharmacologist(DemoAgent):
    """Weighs the table's pairs and the predicted mechanisms; a severe pair goes to a person."""

    confidence = 0.85

    def work(self, task: Task) -> Outcome:
        screen, mechanism = phase_results(task)["screen"], phase_results(task)["mechanism"]
        predicted = mechanism["molecular-interaction"]["predicted"]
        result = healthcare.assess(screen["drugs"], screen["found"], predicted)
        if opinion := second_opinion(mechanism):
            result = with_second_opinion(result, opinion)
        severe = [p for p in result["interactions"] if p["severity"] in healthcare.SEVERE]
        if not severe:  # a hold the pharmacy advised was decided by a person there
            return Outcome(output={**result, "action": "hold" if result["hold"] else "continue"})
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


def second_opinion(mechanism: dict) -> dict | None:
    """The regional pharmacy's review, when a peer realm gave one (a federated demo): its
    result under the call key "<realm>:second-opinion", with the realm's name added."""
    for key, value in mechanism.items():
        if key.endswith(":second-opinion") and isinstance(value, dict):
            return {**value, "realm": key.partition(":")[0]}
    return None


def with_second_opinion(result: dict, opinion: dict) -> dict:
    """The pharmacy's holds join the hospital's (a person there decided on each: its review
    of a severe interaction waits for one), and its community fills are reconciled."""
    monitoring = list(result["monitoring"])
    if opinion.get("interactions"):
        monitoring.append("medication reconciliation (community fills)")
    summary = {
        key: opinion.get(key) for key in ("realm", "agrees", "recommendation", "hold", "highest")
    }
    summary["community_fills"] = [fill["drug"] for fill in opinion.get("community_fills", [])]
    return {
        **result,
        "hold": sorted({*result["hold"], *opinion.get("hold", [])}),
        "monitoring": monitoring,
        "second_opinion": summary,
    }


class Doser(DemoAgent):
    renal = False

    def work(self, task: Task) -> Outcome:
        patient = given(task)
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
        if given(task)["order"]["drug"] not in healthcare.FORMULARY:
            return Decline("the drug is not in the formulary")
        return Bid(confidence=0.8)


@python_agent("demo.renal-doser")
class RenalDoser(Doser):
    """Adjusts renally cleared drugs to the kidney function (Giusti-Hayton)."""

    renal = True

    def bid(self, task: Task) -> Bid | Decline | None:
        patient = given(task)
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
        patient = phase_results(task)["admit"]
        safety = phase_results(task)["medication-safety"]
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
        request = given(task)
        wards = healthcare.generate_hospital(faults.rng_for(task, "hospital"))
        placed = healthcare.allocate(request, wards)
        return Outcome(output={"patient": request["patient"], **placed})


@python_agent("demo.care-planner")
class CarePlanner(DemoAgent):
    confidence = 0.9

    def work(self, task: Task) -> Outcome:
        phases = phase_results(task)
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
