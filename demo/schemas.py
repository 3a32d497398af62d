"""The JSON schemas of the demo's results that a person may be asked to decide on."""

from __future__ import annotations

# The doser's result (demo.healthcare.compute_dose). Titles and units (`unit` is a keyword
# of ours, which validators ignore) are what the console shows a person deciding on a dose.
DOSE_SCHEMA = {
    "type": "object",
    "required": ["drug", "dose_mg"],
    "properties": {
        "drug": {"type": "string", "title": "Drug"},
        "dose_mg": {"type": "number", "exclusiveMinimum": 0, "title": "Dose", "unit": "mg"},
        "max_dose_mg": {
            "type": "number",
            "exclusiveMinimum": 0,
            "title": "maximum for this patient",
            "unit": "mg",
            "description": "The drug's maximum single dose.",
        },
        "percent_of_max": {
            "type": "number",
            "minimum": 0,
            "title": "Share of maximum",
            "unit": "%",
        },
        "weight_kg": {"type": "number", "exclusiveMinimum": 0, "title": "Weight", "unit": "kg"},
        "mg_per_kg": {"type": "number", "exclusiveMinimum": 0, "title": "Ordered", "unit": "mg/kg"},
        "renal_factor": {
            "type": "number",
            "exclusiveMinimum": 0,
            "title": "Renal factor",
            "description": "1 without renal adjustment; less when kidney function is reduced.",
        },
        "infusion_minutes": {
            "type": "integer",
            "minimum": 0,
            "title": "Infusion time",
            "unit": "min",
        },
        "capped": {"type": "boolean", "title": "Capped at the maximum"},
    },
}
