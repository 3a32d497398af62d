"""What the regional pharmacy's second opinion computes (the demo's second realm, README:
The demo, federated): the patient's community dispensing record (what community pharmacies
filled that the hospital's medication list lacks) and a consultant pharmacist's review of the
hospital's interaction screen with those fills added.

Pure functions without Django, on demo.healthcare's tables, so tests call them directly. The
figures are illustrative and not clinical guidance.
"""

from __future__ import annotations

import random
from typing import Any

from demo import healthcare

# Prescriptions often filled at a community pharmacy, unseen by the hospital: the first group
# interacts badly with common home medications, the second with nothing on the lists here.
INTERACTING_FILLS = (
    "clarithromycin", "fluconazole", "ciprofloxacin", "tramadol", "ibuprofen", "trimethoprim",
)  # fmt: skip
HARMLESS_FILLS = ("amoxicillin", "loratadine", "levothyroxine", "metformin", "cetirizine")
PHARMACIES = ("Riverside Pharmacy", "Market Street Chemist", "Hillcrest Dispensary")
# Below this confidence the pharmacist's review waits for a person (the blueprint's policy).
CONFIDENCE_FLOOR = 0.6
SURE, UNSURE = 0.9, 0.45


def severe_pairs_with(drugs: list[str], fill: str) -> list[dict[str, Any]]:
    """The severe interactions the fill would add to the list, from the table or predicted."""
    everything = [*drugs, fill]
    found = [*healthcare.screen(everything, healthcare.INTERACTIONS)]
    found += healthcare.mechanisms(everything)
    return [f for f in found if fill in f["pair"] and f["severity"] in healthcare.SEVERE]


def dispensing_record(rng: random.Random, drugs: list[str], *, hazard: bool) -> list[dict]:
    """The community fills of the last 90 days. With a hazard, one of them interacts badly
    with the hospital's list (when some fill would: a patient on nothing risky has none)."""
    fills = [_fill(rng, d) for d in rng.sample(HARMLESS_FILLS, rng.randint(0, 2)) if d not in drugs]
    if hazard:
        risky = [d for d in INTERACTING_FILLS if d not in drugs and severe_pairs_with(drugs, d)]
        if risky:
            fills.append(_fill(rng, rng.choice(risky)))
    return fills


def _fill(rng: random.Random, drug: str) -> dict[str, Any]:
    return {"drug": drug, "days_ago": rng.randint(1, 90), "pharmacy": rng.choice(PHARMACIES)}


def review(drugs: list[str], fills: list[dict[str, Any]]) -> dict[str, Any]:
    """The hospital's list with the community fills added: the interactions the fills bring
    (each at its worst, as demo.healthcare.assess weighs them), what to hold, and whether the
    pharmacy agrees with a screen that saw only the hospital's list."""
    community = [f["drug"] for f in fills if f["drug"] not in drugs]
    everything = [*drugs, *community]
    assessed = healthcare.assess(
        everything,
        healthcare.screen(everything, healthcare.INTERACTIONS),
        healthcare.mechanisms(everything),
    )
    added = [
        p
        for p in assessed["interactions"]
        if set(p["pair"]) & set(community) and p["severity"] != "none"
    ]
    severe = [p for p in added if p["severity"] in healthcare.SEVERE]
    hold = sorted({p["hold"] for p in severe})
    if severe:
        worst = severe[0]
        recommendation = (
            f"{worst['severity']} interaction with a community fill: "
            f"{' + '.join(worst['pair'])} ({worst['why'][0]}); hold {', '.join(hold)}"
        )
    else:
        recommendation = "no further interaction: the hospital's screen stands"
    return {
        "community_fills": fills,
        "interactions": added,
        "highest": severe[0]["severity"] if severe else "none",
        "hold": hold,
        "agrees": not severe,
        "recommendation": recommendation,
    }


def confidence(reviewed: dict[str, Any]) -> float:
    """How sure the pharmacist is: a severe interaction resting on a community fill is not
    sure (the patient may have stopped it), so it goes under the floor and to a person."""
    return SURE if reviewed["agrees"] else UNSURE


def fill_stopped(reviewed: dict[str, Any], said: str) -> dict[str, Any]:
    """A person rejected the hold (the patient no longer takes the fill): nothing held."""
    return {
        **reviewed,
        "hold": [],
        "agrees": True,
        "recommendation": "the community fill is no longer taken: reconcile the record",
        "override": said,
    }
