"""loops.engine.judge.limit_crossed: Escalate(over=…) with a number or another field of the
result, and what it records for the console (issue 17). Pure: no database."""

from __future__ import annotations

from loops.engine.judge import limit_crossed


def test_a_number_limit():
    assert limit_crossed({"dose_mg": 1600}, "dose_mg", 1000) == {
        "field": "dose_mg",
        "value": 1600,
        "limit": 1000,
    }
    assert limit_crossed({"dose_mg": 1000}, "dose_mg", 1000) == {}  # at the limit is not over


def test_a_limit_that_is_another_field_of_the_result():
    result = {"dose_mg": 1450, "max_dose_mg": 1000.0}

    assert limit_crossed(result, "dose_mg", "max_dose_mg") == {
        "field": "dose_mg",
        "value": 1450,
        "limit": 1000.0,
        "limit_field": "max_dose_mg",
    }
    assert limit_crossed({"dose_mg": 900, "max_dose_mg": 1000}, "dose_mg", "max_dose_mg") == {}


def test_what_is_not_a_number_crosses_nothing():
    # The output schema, not this rule, says what a result must hold.
    assert limit_crossed({"dose_mg": 1450}, "dose_mg", "max_dose_mg") == {}  # no such field
    assert limit_crossed({"dose_mg": 1450, "max_dose_mg": "lots"}, "dose_mg", "max_dose_mg") == {}
    assert limit_crossed({"dose_mg": True}, "dose_mg", 0) == {}  # a bool is not a number
    assert limit_crossed({"dose_mg": 5, "cap": False}, "dose_mg", "cap") == {}
