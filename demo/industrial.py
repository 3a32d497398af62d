"""What the industrial demo computes: a machine's vibration stream, z-score anomaly detection
over a rolling window, the remaining useful life from the wear trend, supplier statistics
from shipment history, and supplier risk scores. Pure functions without Django.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Any

WINDOW = 30  # readings in the rolling mean and standard deviation
WARNING_Z, CRITICAL_Z = 3.0, 5.0
# ISO 10816-3 velocity limits (mm/s RMS) for medium-sized machines on rigid foundations.
ZONES = ((1.4, "A"), (2.8, "B"), (4.5, "C"), (math.inf, "D"))
DAMAGE_MM_S = 4.5  # the zone C/D boundary: vibration at which damage may occur
MACHINES = ("pump", "compressor", "fan", "gearbox")
PARTS = {
    "pump": ("bearing 6205-2RS", "mechanical seal"),
    "compressor": ("valve plate", "bearing 6308"),
    "fan": ("bearing 6206", "drive belt"),
    "gearbox": ("bearing 22210", "oil seal"),
}
SUPPLIERS = (
    "Acme Bearings", "Nordic Seals", "Baltic Drives", "Ruhr Components", "Iberia Industrial",
    "Lakeside Supply", "Kanto Precision", "Delta Spares",
)  # fmt: skip
# Supplier risk: lateness matters most, then defects, then having no alternative.
RISK_WEIGHTS = {"lateness": 0.5, "defects": 0.3, "single_source": 0.2}
LATE_DAYS_FULL = 10.0  # a weighted mean delay of 10 days counts as fully late
DEFECTS_FULL = 0.05  # 5 % defective units count as fully defective
RISK_LIMIT = 0.75  # a critical part's supplier this risky needs a human's decision


def generate_plant(rng: random.Random, *, spike: bool, risky_supplier: bool) -> dict[str, Any]:
    """A machine with a week of hourly vibration readings (a baseline, slow wear and noise)
    and the suppliers of its spare parts. With spike, one reading jumps 6 to 9 standard
    deviations, and the detector flags it critical; without, nothing is critical (noise that
    happens to look like a spike is drawn again). A risky supplier is the only, late and
    defective source of a critical part."""
    kind = rng.choice(MACHINES)
    noise = rng.uniform(0.05, 0.12)
    level, wear = rng.uniform(1.0, 3.2), rng.uniform(0.0, 0.004)
    for _ in range(20):
        readings = [round(level + wear * t + rng.gauss(0, noise), 3) for t in range(168)]
        if spike:
            at = rng.randrange(120, 150)
            readings[at] = round(readings[at] + rng.uniform(6, 9) * noise, 3)
        if detect(readings)["critical"] == spike:
            break
    return {
        "machine": {"id": f"{kind}-{rng.randint(1, 40):02d}", "kind": kind},
        "interval_hours": 1,
        "readings": readings,
        "suppliers": _suppliers(rng, kind, risky_supplier),
    }


def _suppliers(rng: random.Random, kind: str, risky: bool) -> list[dict[str, Any]]:
    critical, other = PARTS[kind]
    names = rng.sample(SUPPLIERS, 4)
    # The critical part has one supplier when risky (or sometimes anyway), else two.
    sources = [(names[0], critical)]
    if not risky and rng.random() < 0.7:
        sources.append((names[1], critical))
    sources += [(names[2], other), (names[3], other)]
    suppliers = []
    for n, (name, part) in enumerate(sources):
        bad = risky and n == 0
        shipments = []
        for _ in range(rng.randint(8, 14)):
            promised = rng.randint(5, 20)
            delay = rng.uniform(6, 16) if bad else max(0.0, rng.gauss(0.5, 2.0))
            units = rng.randint(20, 200)
            share = rng.uniform(0.04, 0.09) if bad else rng.uniform(0.0, 0.02)
            defects = round(units * share)
            shipments.append(
                {
                    "promised_days": promised,
                    "actual_days": round(promised + delay, 1),
                    "units": units,
                    "defects": defects,
                }
            )
        suppliers.append(
            {"name": name, "part": part, "critical": part == critical, "shipments": shipments}
        )
    return suppliers


# --- Anomalies (the anomaly-detection micro-loop) ------------------------------------------


def detect(readings: list[float], window: int = WINDOW) -> dict[str, Any]:
    """Each reading against the mean and (population) standard deviation of the `window`
    readings before it: |z| ≥ 3 is a warning, |z| ≥ 5 critical."""
    flagged, worst = [], 0.0
    for t in range(window, len(readings)):
        before = readings[t - window : t]
        mean, sd = statistics.fmean(before), statistics.pstdev(before)
        if sd == 0:
            continue
        z = (readings[t] - mean) / sd
        worst = max(worst, abs(z))
        if abs(z) >= WARNING_Z:
            level = "critical" if abs(z) >= CRITICAL_Z else "warning"
            flagged.append({"index": t, "value": readings[t], "z": round(z, 2), "level": level})
    return {
        "window": window,
        "readings": len(readings),
        "flagged": flagged,
        "max_abs_z": round(worst, 2),
        "critical": any(f["level"] == "critical" for f in flagged),
    }


# --- Wear (the predictive-maintenance sub-loop) --------------------------------------------


def zone(velocity: float) -> str:
    return next(name for limit, name in ZONES if velocity < limit)


def remaining_life(readings: list[float], skip: set[int], interval_hours: float = 1) -> dict:
    """A least-squares line through the readings (without anomalies); the hours until it
    reaches the damage limit."""
    points = [(t * interval_hours, v) for t, v in enumerate(readings) if t not in skip]
    slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
    now = points[-1][0]
    level = intercept + slope * now
    hours = None if slope <= 0 else max(0.0, (DAMAGE_MM_S - level) / slope)
    return {
        "level_mm_s": round(level, 3),
        "zone": zone(level),
        "slope_mm_s_per_day": round(slope * 24, 4),
        "rul_hours": None if hours is None else round(hours, 1),
    }


# --- Suppliers (the supply-chain-tracker sub-loop and the risk-assessment micro-loop) -----


def supplier_stats(suppliers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """On-time rate, recency-weighted mean delay, defect rate and whether a part has no
    other supplier."""
    sources: dict[str, int] = {}
    for s in suppliers:
        sources[s["part"]] = sources.get(s["part"], 0) + 1
    stats = []
    for s in suppliers:
        shipments = s["shipments"]
        delays = [max(0.0, x["actual_days"] - x["promised_days"]) for x in shipments]
        weights = [0.85 ** (len(delays) - 1 - n) for n in range(len(delays))]  # newest last
        units = sum(x["units"] for x in shipments)
        stats.append(
            {
                "name": s["name"],
                "part": s["part"],
                "critical": s["critical"],
                "shipments": len(shipments),
                "on_time_rate": round(sum(d == 0 for d in delays) / len(delays), 3),
                "weighted_delay_days": round(
                    sum(w * d for w, d in zip(weights, delays, strict=True)) / sum(weights), 2
                ),
                "defect_rate": round(sum(x["defects"] for x in shipments) / units, 4),
                "single_source": sources[s["part"]] == 1,
                "lead_time_days": round(statistics.fmean(x["actual_days"] for x in shipments), 1),
            }
        )
    return stats


def supplier_risk(stat: dict[str, Any]) -> float:
    """0 (no risk) to 1: weighted lateness, defect rate and being the only source."""
    parts = {
        "lateness": min(1.0, stat["weighted_delay_days"] / LATE_DAYS_FULL),
        "defects": min(1.0, stat["defect_rate"] / DEFECTS_FULL),
        "single_source": 1.0 if stat["single_source"] else 0.0,
    }
    return round(sum(RISK_WEIGHTS[k] * v for k, v in parts.items()), 3)


def rank_suppliers(stats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    scored = [{**s, "risk": supplier_risk(s)} for s in stats]
    return sorted(scored, key=lambda s: (-s["risk"], s["name"]))


def risk_problems(value: Any) -> list[str]:
    """Why a risk ranking cannot be used (the risk validator's feedback)."""
    ranked = value.get("suppliers") if isinstance(value, dict) else None
    if not ranked:
        return ["no supplier was scored"]
    risks = [s["risk"] for s in ranked]
    if not all(0 <= r <= 1 for r in risks):
        return ["a risk lies outside 0..1"]
    if risks != sorted(risks, reverse=True):
        return ["the suppliers are not ranked by risk"]
    return []
