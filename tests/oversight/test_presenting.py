"""oversight.presenting: a proposal's fields with labels and units, the limit it crossed in
words, and what each choice does. Pure functions: no database."""

from __future__ import annotations

from oversight import presenting
from oversight.presenting import Field

DOSE = {
    "type": "object",
    "properties": {
        "drug": {"type": "string", "title": "Drug"},
        "dose_mg": {"type": "number", "title": "Dose", "unit": "mg"},
        "max_dose_mg": {"type": "number", "title": "maximum for this patient", "unit": "mg"},
        "percent_of_max": {"type": "number", "title": "Share of maximum", "unit": "%"},
        "renal_factor": {"type": "number", "description": "1 without renal adjustment."},
    },
}
PROPOSAL = {
    "percent_of_max": 145,
    "dose_mg": 1450,
    "drug": "vancomycin",
    "max_dose_mg": 1000,
    "capped": False,
    "renal_factor": 0.75,
    "notes": ["q12h", "trough"],
}


def test_the_sentence_names_a_limit_field_by_its_title_with_units_and_separators():
    limit = {"field": "dose_mg", "value": 1450, "limit": 1000, "limit_field": "max_dose_mg"}

    sentence = presenting.limit_sentence(limit, DOSE)

    assert sentence == "Dose 1,450 mg is over the 1,000 mg maximum for this patient"


def test_a_number_limit_is_the_limit_of_that_many_units():
    limit = {"field": "dose_mg", "value": 1600, "limit": 1000}

    assert presenting.limit_sentence(limit, DOSE) == "Dose 1,600 mg is over the limit of 1,000 mg"


def test_without_a_schema_the_keys_are_humanised():
    limit = {"field": "dose_mg", "value": 1600.5, "limit": 1000, "limit_field": "max_dose_mg"}

    sentence = presenting.limit_sentence(limit, None)

    assert sentence == "Dose mg 1,600.5 is over the 1,000 max dose mg"


def test_no_limit_no_sentence():
    assert presenting.limit_sentence(None, DOSE) == ""
    assert presenting.limit_sentence({"field": "dose_mg"}, DOSE) == ""  # incomplete: said nothing


def test_fields_follow_the_schema_then_the_rest_with_labels_units_and_the_crossed_one():
    limit = {"field": "dose_mg", "value": 1450, "limit": 1000, "limit_field": "max_dose_mg"}

    fields = presenting.proposal_fields(PROPOSAL, DOSE, limit)

    assert fields == [
        Field("drug", "Drug", "vancomycin"),
        Field("dose_mg", "Dose", "1,450 mg", crossed=True),
        Field("max_dose_mg", "maximum for this patient", "1,000 mg"),
        Field("percent_of_max", "Share of maximum", "145%"),
        Field("renal_factor", "Renal factor", "0.75", description="1 without renal adjustment."),
        Field("capped", "Capped", "no"),
        Field("notes", "Notes", "q12h, trough"),
    ]


def test_values_of_every_kind_read_as_text():
    assert presenting.value_text(1234567.891234, "kg") == "1,234,567.8912 kg"
    assert presenting.value_text(2.0, "mg") == "2 mg"
    assert presenting.value_text(None) == "—"
    assert presenting.value_text({"b": 1, "a": [1, 2]}) == '{"a": [1, 2], "b": 1}'
    assert presenting.value_text(True) == "yes"
    assert presenting.humanise("maxDoseMg") == "Max dose mg"


def test_a_proposal_that_is_not_an_object_is_one_field():
    assert presenting.proposal_fields(42, None) == [Field("", "Proposal", "42")]
    assert presenting.proposal_fields(None, None) == []


def test_a_list_of_objects_is_a_table_with_labelled_columns_not_json():
    """The industrial demo's supplier ranking: each supplier a row, each key a column (the
    items' schema first, with its titles and units), a missing key a dash."""
    ranked = [
        {"name": "Kessler", "risk": 0.82, "single_source": True, "lead_time_days": 14.5},
        {"name": "Ostrava", "risk": 0.31, "single_source": False, "note": "new"},
    ]
    items = {"properties": {"risk": {"title": "Risk"}, "lead_time_days": {"unit": "days"}}}
    schema = {"properties": {"suppliers": {"type": "array", "items": items}}}

    [field] = presenting.proposal_fields({"suppliers": ranked}, schema)

    assert (field.label, field.value) == ("Suppliers", "2 items")
    assert field.table is not None
    assert field.table.columns == ["Risk", "Lead time days", "Name", "Single source", "Note"]
    assert field.table.rows == [
        ["0.82", "14.5 days", "Kessler", "yes", "—"],
        ["0.31", "—", "Ostrava", "no", "new"],
    ]
    assert presenting.table([1, 2]) is None and presenting.table([]) is None


def test_the_choices_say_what_goes_ahead_what_reject_does_and_the_default():
    limit = {"field": "dose_mg", "value": 1450, "limit": 1000, "limit_field": "max_dose_mg"}

    does = presenting.choices(
        proposal=PROPOSAL,
        schema=DOSE,
        limit=limit,
        default_action="reject",
        on_reject="the doser then proposes no more than the drug's maximum",
    )

    assert does.approve == "Dose 1,450 mg goes ahead as proposed, over its limit."
    assert does.reject == (
        "Nothing of it is used: the step runs again with your comment as feedback; the doser "
        "then proposes no more than the drug's maximum. It is also what happens if nobody "
        "decides in time."
    )
    assert does.modify.startswith("Your edited values replace the proposal")


def test_without_a_limit_approve_uses_the_proposal_and_may_be_the_default():
    does = presenting.choices(proposal={}, schema=None, limit=None, default_action="approve")

    assert does.approve.startswith("The proposal is used as it stands")
    assert does.approve.endswith("It is also what happens if nobody decides in time.")
    assert "nobody" not in does.reject
