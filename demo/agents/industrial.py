"""The industrial domain's agents: telemetry, anomaly detection, remaining useful life,
supplier tracking and risk, and the maintenance plan, computed by demo.industrial.
"""

from __future__ import annotations

from typing import Any

from demo import faults, industrial
from demo.agents.base import DemoAgent, given, phase_results
from loops.declare import python_agent
from loops.messages import Bid, Decline, Escalation, Outcome, Task


class Survey(DemoAgent):
    lag_readings = 0  # how far behind the live stream this source is

    def work(self, task: Task) -> Outcome:
        rng = faults.rng_for(task, "plant")
        spike, risky = faults.hazard(rng), faults.hazard(rng)
        plant = industrial.generate_plant(rng, spike=spike, risky_supplier=risky)
        plant.update(given(task).get("plant", {}))
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
        if len(given(task).get("readings", [])) <= industrial.WINDOW:
            return Decline("too few readings for the rolling window")
        return Bid(confidence=self.confidence)

    def work(self, task: Task) -> Outcome:
        plant = given(task)
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
        plant = given(task)
        found = phase_results(task)["detect"]["anomaly-detection"]
        skip = {f["index"] for f in found["flagged"] if f["level"] == "critical"}
        life = industrial.remaining_life(plant["readings"], skip, plant["interval_hours"])
        anomalies = {k: found[k] for k in ("critical", "max_abs_z", "action")}
        return Outcome(output={"machine": found["machine"], **life, "anomalies": anomalies})


class Tracker(DemoAgent):
    unbooked = 0  # the latest deliveries this source has not booked yet

    def work(self, task: Task) -> Outcome:
        suppliers = given(task)["suppliers"]
        if self.unbooked:
            suppliers = [{**s, "shipments": s["shipments"][: -self.unbooked]} for s in suppliers]
        stats = industrial.supplier_stats(suppliers)
        output = {
            "machine": given(task)["machine"],
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
        ranked = industrial.rank_suppliers(given(task)["suppliers"])
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
        assessed = phase_results(task)["assess"]
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
