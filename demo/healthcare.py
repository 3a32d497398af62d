"""What the healthcare demo computes: patients, weight-based doses against a maximum, drug
interactions from a table of well-known pairs and from their mechanisms, and bed allocation.

Pure functions without Django, so tests call them directly. The figures are illustrative,
close to common adult references, and not clinical guidance.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from itertools import combinations
from typing import Any


@dataclass(frozen=True)
class Drug:
    mg_per_kg: float
    max_mg: float  # the largest single dose
    step_mg: float  # doses are rounded to what can be measured out
    fe: float = 0.0  # fraction excreted unchanged by the kidneys (Giusti-Hayton)
    infusion_min: int = 0  # 0: not an infusion
    max_rate_mg_min: float | None = None


FORMULARY: dict[str, Drug] = {
    "acetaminophen": Drug(15, 1000, 50, infusion_min=15),
    "ibuprofen": Drug(10, 800, 100),
    "vancomycin": Drug(15, 2000, 250, fe=0.9, infusion_min=60, max_rate_mg_min=10),
    "gentamicin": Drug(5, 500, 20, fe=0.95, infusion_min=30),
    "cefazolin": Drug(30, 2000, 250, fe=0.8, infusion_min=30),
    "morphine": Drug(0.1, 10, 0.5, infusion_min=5),
    "ondansetron": Drug(0.15, 16, 1, infusion_min=15),
}

SEVERITIES = ("none", "minor", "moderate", "major", "contraindicated")
SEVERE = frozenset({"major", "contraindicated"})

# Well-known interacting pairs: severity, effect, and which drug to hold when it is severe.
INTERACTIONS: dict[frozenset[str], tuple[str, str, str]] = {
    frozenset(pair): entry
    for pair, entry in [
        (("warfarin", "aspirin"), ("major", "additive bleeding risk", "aspirin")),
        (
            ("warfarin", "ibuprofen"),
            ("major", "GI bleeding; the NSAID adds to warfarin", "ibuprofen"),
        ),
        (("warfarin", "fluconazole"), ("major", "CYP2C9 inhibition raises the INR", "fluconazole")),
        (("warfarin", "acetaminophen"), ("moderate", "regular use raises the INR", "")),
        (
            ("simvastatin", "clarithromycin"),
            ("contraindicated", "CYP3A4 inhibition: rhabdomyolysis", "simvastatin"),
        ),
        (
            ("simvastatin", "amiodarone"),
            ("major", "myopathy above 20 mg simvastatin", "simvastatin"),
        ),
        (
            ("sildenafil", "nitroglycerin"),
            ("contraindicated", "profound hypotension", "sildenafil"),
        ),
        (
            ("phenelzine", "sertraline"),
            ("contraindicated", "serotonin syndrome (MAOI + SSRI)", "sertraline"),
        ),
        (
            ("linezolid", "sertraline"),
            ("major", "serotonin syndrome (linezolid is an MAOI)", "linezolid"),
        ),
        (("tramadol", "sertraline"), ("major", "serotonin syndrome and seizures", "tramadol")),
        (("clopidogrel", "omeprazole"), ("moderate", "CYP2C19 inhibition weakens clopidogrel", "")),
        (
            ("methotrexate", "trimethoprim"),
            ("major", "additive antifolate: marrow suppression", "trimethoprim"),
        ),
        (("lisinopril", "spironolactone"), ("moderate", "hyperkalaemia", "")),
        (("digoxin", "amiodarone"), ("major", "digoxin levels rise: toxicity", "digoxin")),
        (
            ("tizanidine", "ciprofloxacin"),
            ("contraindicated", "CYP1A2 inhibition: severe hypotension", "tizanidine"),
        ),
        (
            ("azathioprine", "allopurinol"),
            ("major", "xanthine oxidase inhibition: toxicity", "azathioprine"),
        ),
        (("lithium", "ibuprofen"), ("moderate", "NSAIDs raise lithium levels", "")),
        (("citalopram", "ondansetron"), ("moderate", "additive QT prolongation", "")),
    ]
}
# The local cache lags the drug database: its newest entries are missing.
CACHE_MISSING = frozenset(
    {
        frozenset(("tizanidine", "ciprofloxacin")),
        frozenset(("azathioprine", "allopurinol")),
        frozenset(("warfarin", "fluconazole")),
    }
)

# For the mechanism model: enzymes a drug is a substrate of or inhibits, effects it has, and
# whether small changes in its level matter (a narrow therapeutic index).
PROPERTIES: dict[str, dict[str, Any]] = {
    "warfarin": {"substrate": {"CYP2C9"}, "effects": {"bleeding"}, "narrow": True},
    "aspirin": {"effects": {"bleeding"}},
    "ibuprofen": {"effects": {"bleeding"}},
    "clopidogrel": {"substrate": {"CYP2C19"}, "effects": {"bleeding"}},
    "simvastatin": {"substrate": {"CYP3A4"}, "narrow": True},
    "atorvastatin": {"substrate": {"CYP3A4"}},
    "clarithromycin": {"inhibits": {"CYP3A4"}, "effects": {"qt"}},
    "amiodarone": {"inhibits": {"CYP3A4", "CYP2C9", "P-gp"}, "effects": {"qt"}},
    "fluconazole": {"inhibits": {"CYP2C9", "CYP3A4"}, "effects": {"qt"}},
    "ciprofloxacin": {"inhibits": {"CYP1A2"}, "effects": {"qt"}},
    "tizanidine": {"substrate": {"CYP1A2"}, "effects": {"hypotension"}, "narrow": True},
    "omeprazole": {"inhibits": {"CYP2C19"}},
    "digoxin": {"substrate": {"P-gp"}, "narrow": True},
    "sertraline": {"effects": {"serotonergic"}},
    "citalopram": {"effects": {"serotonergic", "qt"}},
    "tramadol": {"effects": {"serotonergic", "sedation"}},
    "phenelzine": {"effects": {"serotonergic", "maoi"}},
    "linezolid": {"effects": {"serotonergic", "maoi"}},
    "ondansetron": {"effects": {"qt"}},
    "nitroglycerin": {"effects": {"nitrate"}},
    "sildenafil": {"substrate": {"CYP3A4"}, "effects": {"pde5"}},
    "lisinopril": {"effects": {"hyperkalaemia"}},
    "spironolactone": {"effects": {"hyperkalaemia"}},
    "trimethoprim": {"effects": {"antifolate", "hyperkalaemia"}},
    "methotrexate": {"effects": {"antifolate"}, "narrow": True},
    "allopurinol": {"inhibits": {"xanthine oxidase"}},
    "azathioprine": {"substrate": {"xanthine oxidase"}, "narrow": True},
    "morphine": {"effects": {"sedation"}},
}
# Both drugs have the effect: (severity, what happens).
_SHARED_EFFECTS = {
    "bleeding": ("major", "additive bleeding risk"),
    "serotonergic": ("major", "serotonin syndrome risk"),
    "qt": ("moderate", "additive QT prolongation"),
    "hyperkalaemia": ("moderate", "additive potassium rise"),
    "antifolate": ("major", "additive antifolate effect"),
    "sedation": ("moderate", "additive sedation"),
}
HOME_MEDICATIONS = (
    "warfarin", "aspirin", "simvastatin", "atorvastatin", "lisinopril", "spironolactone",
    "omeprazole", "sertraline", "citalopram", "clopidogrel", "digoxin", "amiodarone",
    "allopurinol", "lithium", "metformin", "levothyroxine", "amlodipine", "metoprolol",
)  # fmt: skip


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


# --- Patients -------------------------------------------------------------------------------


def crcl(*, age: float, weight_kg: float, creatinine_mg_dl: float, female: bool) -> float:
    """Creatinine clearance (Cockcroft-Gault), mL/min."""
    value = (140 - age) * weight_kg / (72 * creatinine_mg_dl)
    return round(value * (0.85 if female else 1.0), 1)


def generate_patient(
    rng: random.Random, *, dose_hazard: bool, interaction_hazard: bool
) -> dict[str, Any]:
    """A patient with an admission order; a hazard makes the order cross the maximum dose, or
    puts a severe pair from the interaction table into the medication list."""
    drug = rng.choice(sorted(FORMULARY))
    spec = FORMULARY[drug]
    limit_kg = spec.max_mg / spec.mg_per_kg  # the weight at which the order reaches the maximum
    stretch = 1.0
    if dose_hazard:
        stretch = rng.uniform(1.08, 1.4)
        weight = min(200.0, limit_kg * stretch)
    else:
        weight = rng.uniform(min(45.0, 0.8 * limit_kg), min(130.0, 0.97 * limit_kg))
    female = rng.random() < 0.5
    # A dose hazard comes with healthy kidneys, so that no renal adjustment hides it.
    age = rng.randint(19, 65) if dose_hazard else rng.randint(19, 92)
    creatinine = 0.7 if dose_hazard else round(rng.uniform(0.6, 2.4), 1)
    medications = _medications(rng, drug, interaction_hazard)
    return complete_patient(
        {
            "id": f"P-{rng.randrange(10000, 99999)}",
            "age": age,
            "sex": "F" if female else "M",
            "weight_kg": round(weight, 1),
            "creatinine_mg_dl": creatinine,
            "acuity": rng.choices((1, 2, 3, 4, 5), weights=(2, 4, 3, 2, 1))[0],
            "isolation": rng.random() < 0.1,
            "medications": medications,
            # One dose hazard in about six is an order entered at twice its mg/kg: a dose
            # over twice the maximum, which takes two people to approve (issue 18).
            "order": {"drug": drug, "mg_per_kg": spec.mg_per_kg * (2 if stretch > 1.347 else 1)},
        }
    )


def complete_patient(patient: dict[str, Any]) -> dict[str, Any]:
    """Derived fields (creatinine clearance) from the given ones."""
    patient["crcl_ml_min"] = crcl(
        age=patient["age"],
        weight_kg=patient["weight_kg"],
        creatinine_mg_dl=patient["creatinine_mg_dl"],
        female=patient["sex"] == "F",
    )
    return patient


def _medications(rng: random.Random, ordered: str, hazard: bool) -> list[str]:
    if hazard:
        pair = rng.choice(sorted(sorted(p) for p, e in INTERACTIONS.items() if e[0] in SEVERE))
        others = rng.sample([m for m in HOME_MEDICATIONS if m not in pair], rng.randint(0, 2))
        return [*others, *pair]
    for _ in range(100):
        medications = rng.sample(HOME_MEDICATIONS, rng.randint(0, 4))
        drugs = [*medications, ordered]
        found = [*screen(drugs, INTERACTIONS), *mechanisms(drugs)]
        if not any(f["severity"] in SEVERE for f in found):
            return medications
    return []


def drug_list(patient: dict[str, Any]) -> list[str]:
    """What the patient takes, the new order last."""
    return [*patient["medications"], patient["order"]["drug"]]


# --- Dosing (the dosage-calculation micro-loop) -------------------------------------------


def renal_factor(drug: str, crcl_ml_min: float) -> float:
    """Giusti-Hayton: the share of the usual dose for this kidney function."""
    fe = FORMULARY[drug].fe
    return round(1 - fe * (1 - min(1.0, crcl_ml_min / 100)), 3)


def compute_dose(patient: dict[str, Any], *, renal: bool = False, cap: bool = False) -> dict:
    """mg/kg x weight (x the renal factor), rounded to the drug's step; with cap, no more
    than the maximum (what a prescriber asks for after a human rejected a higher dose)."""
    order = patient["order"]
    drug = FORMULARY[order["drug"]]
    factor = renal_factor(order["drug"], patient["crcl_ml_min"]) if renal else 1.0
    raw = order["mg_per_kg"] * patient["weight_kg"] * factor
    dose = max(drug.step_mg, round(raw / drug.step_mg) * drug.step_mg)
    if cap:
        dose = min(dose, drug.max_mg)
    minutes = drug.infusion_min
    if minutes and drug.max_rate_mg_min:
        minutes = max(minutes, math.ceil(dose / drug.max_rate_mg_min))
    return {
        "drug": order["drug"],
        "weight_kg": patient["weight_kg"],
        "mg_per_kg": order["mg_per_kg"],
        "renal_factor": factor,
        "dose_mg": dose,
        "max_dose_mg": drug.max_mg,
        "percent_of_max": round(100 * dose / drug.max_mg, 1),
        "capped": cap and dose == drug.max_mg,
        "infusion_minutes": minutes,
    }


def dose_problems(result: Any) -> list[str]:
    """Why a dose result cannot be used (the dosage validator's feedback)."""
    if not isinstance(result, dict) or result.get("drug") not in FORMULARY:
        return ["the result names no drug of the formulary"]
    dose, drug = result.get("dose_mg"), FORMULARY[result["drug"]]
    if not isinstance(dose, int | float) or not math.isfinite(dose) or dose <= 0:
        return [f"dose_mg must be a positive number, not {dose!r}"]
    problems = []
    expected = result["mg_per_kg"] * result["weight_kg"] * result.get("renal_factor", 1.0)
    if not result.get("capped") and abs(dose - expected) > drug.step_mg:
        problems.append(f"{dose:g} mg is not {result['mg_per_kg']:g} mg/kg of the weight")
    if result.get("percent_of_max") != round(100 * dose / drug.max_mg, 1):
        problems.append("percent_of_max does not match the dose")
    return problems


# --- Interactions (the drug-interaction-checker and molecular-interaction loops) ----------


def screen(drugs: list[str], table: dict[frozenset[str], tuple[str, str, str]]) -> list[dict]:
    """Every pair of the list found in the table, most severe first."""
    found = []
    for a, b in combinations(sorted(set(drugs)), 2):
        if entry := table.get(frozenset((a, b))):
            severity, effect, hold = entry
            found.append({"pair": [a, b], "severity": severity, "effect": effect, "hold": hold})
    return sorted(found, key=lambda f: -severity_rank(f["severity"]))


def mechanisms(drugs: list[str]) -> list[dict]:
    """Interactions predicted from what the drugs do: an enzyme one inhibits and the other
    needs, or an effect both have. Finds pairs the table lacks."""
    found = []
    for a, b in combinations(sorted(set(drugs)), 2):
        pa, pb = PROPERTIES.get(a, {}), PROPERTIES.get(b, {})
        for x, px, y, py in ((a, pa, b, pb), (b, pb, a, pa)):
            for enzyme in sorted(px.get("inhibits", set()) & py.get("substrate", set())):
                severity = "major" if py.get("narrow") else "moderate"
                found.append(_mechanism(a, b, severity, f"{x} inhibits {enzyme}: {y} rises"))
        effects_a, effects_b = pa.get("effects", set()), pb.get("effects", set())
        if {"nitrate", "pde5"} <= effects_a | effects_b and effects_a != effects_b:
            found.append(_mechanism(a, b, "contraindicated", "nitrate + PDE5 inhibitor"))
        elif "maoi" in effects_a | effects_b and {"serotonergic"} <= effects_a & effects_b:
            found.append(_mechanism(a, b, "contraindicated", "MAOI + serotonergic drug"))
        for effect in sorted(effects_a & effects_b & set(_SHARED_EFFECTS)):
            severity, what = _SHARED_EFFECTS[effect]
            found.append(_mechanism(a, b, severity, what))
    return sorted(found, key=lambda f: -severity_rank(f["severity"]))


def _mechanism(a: str, b: str, severity: str, mechanism: str) -> dict[str, Any]:
    return {"pair": [a, b], "severity": severity, "mechanism": mechanism}


def assess(drugs: list[str], found: list[dict], predicted: list[dict]) -> dict[str, Any]:
    """Each pair at its worst severity from the table or the mechanisms; what to hold."""
    pairs: dict[tuple[str, ...], dict[str, Any]] = {}
    for item in [*found, *predicted]:
        key = tuple(sorted(item["pair"]))
        pair = pairs.setdefault(key, {"pair": list(key), "severity": "none", "why": []})
        if severity_rank(item["severity"]) > severity_rank(pair["severity"]):
            pair["severity"] = item["severity"]
        pair["why"].append(item.get("effect") or item.get("mechanism"))
        if item.get("hold"):
            pair["hold"] = item["hold"]
    ranked = sorted(pairs.values(), key=lambda p: -severity_rank(p["severity"]))
    for pair in ranked:
        if pair["severity"] in SEVERE and "hold" not in pair:
            # No table advice: hold the one listed later, the more recently started.
            pair["hold"] = max(pair["pair"], key=lambda d: drugs.index(d) if d in drugs else -1)
    severe = [p for p in ranked if p["severity"] in SEVERE]
    return {
        "interactions": ranked,
        "highest": ranked[0]["severity"] if ranked else "none",
        "hold": sorted({p["hold"] for p in severe}),
        "monitoring": _monitoring(drugs, ranked),
    }


def _monitoring(drugs: list[str], pairs: list[dict]) -> list[str]:
    why = " ".join(" ".join(p["why"]) for p in pairs)
    checks = {
        "INR": "warfarin" in drugs,
        "ECG (QT)": "QT" in why,
        "potassium": "potassium" in why or "hyperkalaemia" in why,
        "full blood count": "marrow" in why or "antifolate" in why,
        "drug levels": "rises" in why or "levels" in why,
    }
    return [name for name, needed in checks.items() if needed]


# --- Beds (the resource-optimizer sub-loop) -----------------------------------------------

WARDS = (("icu", 5, 10), ("step-down", 3, 14), ("medical", 1, 28))  # name, min acuity, beds


def generate_hospital(rng: random.Random) -> list[dict[str, Any]]:
    wards = []
    for name, _, beds in WARDS:
        free = rng.randint(0, max(1, beds // 4))
        nurses = max(2, beds // (2 if name == "icu" else 5))
        wards.append(
            {
                "ward": name,
                "free_beds": [f"{name}-{n}" for n in rng.sample(range(1, beds + 1), free)],
                "side_rooms": [f"{name}-{n}" for n in range(1, 3)],
                "nurse_load": {f"{name}-rn{n}": rng.randint(3, 12) for n in range(1, nurses + 1)},
                "pumps_free": rng.randint(0, 4),
            }
        )
    return wards


def allocate(request: dict[str, Any], wards: list[dict[str, Any]]) -> dict[str, Any]:
    """A bed in the ward the acuity needs (or the next higher level of care), a side room
    for isolation, the least-loaded nurse, and a pump for an infusion; else boarding."""
    acuity = request["acuity"]
    needed = next(i for i, (_, floor, _) in enumerate(WARDS) if acuity >= floor)
    for ward in reversed(wards[: needed + 1]):  # the needed level first, then higher care
        beds = ward["free_beds"]
        if request.get("isolation"):
            beds = [b for b in beds if b in ward["side_rooms"]]
        if not beds:
            continue
        nurse = min(ward["nurse_load"], key=lambda n: (ward["nurse_load"][n], n))
        return {
            "status": "admitted",
            "ward": ward["ward"],
            "bed": sorted(beds)[0],
            "nurse": nurse,
            "nurse_load": ward["nurse_load"][nurse] + acuity,
            "pump": bool(request.get("infusion_minutes")) and ward["pumps_free"] > 0,
            "step_up": ward["ward"] != WARDS[needed][0],
        }
    return {"status": "boarding", "ward": WARDS[needed][0], "bed": None, "reason": "no free bed"}
