from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loops.merge import STRATEGIES, Candidate, MergeError, merge

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _candidates(*specs: tuple[str, Any, float]) -> list[Candidate]:
    """One candidate per (agent, output, confidence), each arriving a second after the last."""
    return [
        Candidate(agent, output, confidence, T0 + timedelta(seconds=i))
        for i, (agent, output, confidence) in enumerate(specs)
    ]


def _fails(code: str, strategy: str, candidates: list[Candidate], **kwargs: Any) -> MergeError:
    with pytest.raises(MergeError) as info:
        merge(strategy, candidates, **kwargs)
    assert info.value.code == code
    return info.value


def test_it_names_every_strategy():
    assert {
        "highest_confidence",
        "collect_all",
        "consensus",
        "majority",
        "vote",
        "weighted_average",
        "first_valid",
        "merge_objects",
        "rank",
    } == STRATEGIES


def test_it_rejects_an_unknown_strategy():
    with pytest.raises(ValueError, match="averagee"):
        merge("averagee", _candidates(("a", 1, 0.5)))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_it_fails_every_strategy_below_min_results(strategy):
    candidates = _candidates(("a", 1, 0.5), ("b", 1, 0.5))
    error = _fails("insufficient_results", strategy, candidates, min_results=3)
    assert "2 results" in error.detail
    assert "3" in error.detail


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_it_fails_every_strategy_without_candidates(strategy):
    _fails("insufficient_results", strategy, [], min_results=0)


def test_it_keeps_code_and_detail_when_copied():
    error = copy.deepcopy(MergeError("no_consensus", "Nobody agrees."))
    assert (error.code, error.detail, str(error)) == (
        "no_consensus",
        "Nobody agrees.",
        "Nobody agrees.",
    )


def test_it_considers_candidates_in_arrival_order():
    early = Candidate("early", 2, 0.5, T0)
    late = Candidate("late", 1, 0.5, T0 + timedelta(minutes=1))
    merged = merge("collect_all", [late, early])
    assert [entry["agent"] for entry in merged.value] == ["early", "late"]


def test_it_keeps_the_given_order_for_equal_arrival_times():
    first, second = Candidate("x", 1, 0.5, T0), Candidate("y", 2, 0.5, T0)
    assert merge("collect_all", [first, second]).contributors == ("x", "y")
    assert merge("collect_all", [second, first]).contributors == ("y", "x")


def test_it_picks_the_highest_confidence():
    merged = merge(
        "highest_confidence",
        _candidates(("dosage-b", "5mg", 0.4), ("dosage-a", "10mg", 0.92), ("dosage-c", "7mg", 0.6)),
    )
    assert merged.value == "10mg"
    assert merged.contributors == ("dosage-a",)
    assert merged.rationale == "highest confidence 0.92 from dosage-a of 3 results"


def test_it_breaks_a_confidence_tie_by_earliest_arrival():
    early, late = _candidates(("early", "x", 0.8), ("late", "y", 0.8))
    merged = merge("highest_confidence", [late, early])
    assert merged.value == "x"
    assert merged.contributors == ("early",)
    assert "tied" in merged.rationale


def test_it_collects_all_outputs_in_arrival_order():
    a, b, c = _candidates(("a", {"k": 1}, 0.1), ("b", None, 0.9), ("c", [3], 0.5))
    merged = merge("collect_all", [c, a, b])
    assert merged.value == [
        {"agent": "a", "output": {"k": 1}, "confidence": 0.1},
        {"agent": "b", "output": None, "confidence": 0.9},
        {"agent": "c", "output": [3], "confidence": 0.5},
    ]
    assert merged.contributors == ("a", "b", "c")


def test_it_reaches_consensus_with_three_of_four_at_0_6():
    candidates = _candidates(
        ("a", "yes", 0.5), ("b", "no", 0.9), ("c", "yes", 0.5), ("d", "yes", 0.1)
    )
    merged = merge("consensus", candidates, threshold=0.6)
    assert merged.value == "yes"
    assert merged.contributors == ("a", "c", "d")
    assert "3/4" in merged.rationale


def test_it_fails_consensus_with_two_of_four_at_0_6():
    candidates = _candidates(
        ("a", "yes", 0.5), ("b", "no", 0.9), ("c", "yes", 0.5), ("d", "hm", 0.1)
    )
    error = _fails("no_consensus", "consensus", candidates, threshold=0.6)
    assert "2/4" in error.detail
    assert "0.6" in error.detail


def test_it_reaches_consensus_at_exactly_the_threshold():
    candidates = _candidates(
        ("a", 1, 0.5), ("b", 2, 0.5), ("c", 1, 0.5), ("d", 3, 0.5), ("e", 1, 0.5)
    )
    assert merge("consensus", candidates, threshold=0.6).value == 1
    assert merge("consensus", candidates[:4]).value == 1


def test_it_compares_dict_outputs_regardless_of_key_order():
    candidates = _candidates(
        ("a", {"dose": 10, "unit": "mg"}, 0.5),
        ("b", {"unit": "mg", "dose": 10}, 0.5),
        ("c", {"dose": 5, "unit": "mg"}, 0.5),
    )
    merged = merge("consensus", candidates, threshold=0.6)
    assert merged.value == {"dose": 10, "unit": "mg"}
    assert merged.contributors == ("a", "b")


def test_it_rejects_outputs_that_are_not_json_in_consensus():
    error = _fails("invalid_outputs", "consensus", _candidates(("a", 1, 0.5), ("odd", {1, 2}, 0.5)))
    assert "odd" in error.detail


def test_it_reaches_a_majority_with_three_of_four_whatever_the_threshold():
    candidates = _candidates(("a", "x", 0.5), ("b", "x", 0.5), ("c", "y", 0.5), ("d", "x", 0.5))
    merged = merge("majority", candidates, threshold=0.9)
    assert merged.value == "x"
    assert merged.contributors == ("a", "b", "d")


def test_it_fails_a_majority_at_exactly_half():
    candidates = _candidates(("a", "x", 0.5), ("b", "x", 0.5), ("c", "y", 0.5), ("d", "z", 0.5))
    error = _fails("no_consensus", "majority", candidates, threshold=0.1)
    assert "2/4" in error.detail


def test_it_elects_the_plurality_in_a_vote():
    candidates = _candidates(
        ("a", "red", 0.9),
        ("b", "blue", 0.1),
        ("c", "blue", 0.1),
        ("d", "green", 0.9),
        ("e", "blue", 0.1),
    )
    merged = merge("vote", candidates)
    assert merged.value == "blue"
    assert merged.contributors == ("b", "c", "e")
    assert merged.rationale.startswith("3 of 5 votes")


def test_it_breaks_a_vote_tie_by_summed_confidence():
    candidates = _candidates(
        ("a", "red", 0.3), ("b", "blue", 0.6), ("c", "red", 0.4), ("d", "blue", 0.5)
    )
    merged = merge("vote", candidates)
    assert merged.value == "blue"
    assert merged.contributors == ("b", "d")
    assert "2 of 4 votes" in merged.rationale
    assert "summed confidence" in merged.rationale


def test_it_breaks_a_vote_tie_of_equal_confidence_by_earliest_first_arrival():
    # In floats 0.1 + 0.2 exceeds 0.15 + 0.15; blue must not win on that noise.
    candidates = _candidates(
        ("a", "red", 0.15), ("b", "blue", 0.1), ("c", "red", 0.15), ("d", "blue", 0.2)
    )
    merged = merge("vote", candidates)
    assert merged.value == "red"
    assert merged.contributors == ("a", "c")
    assert "earlier arrival" in merged.rationale


def test_it_averages_weighted_by_confidence():
    merged = merge("weighted_average", _candidates(("a", 10, 0.25), ("b", 20, 0.75)))
    assert merged.value == pytest.approx(17.5)
    assert merged.contributors == ("a", "b")


def test_it_falls_back_to_the_plain_mean_when_every_confidence_is_zero():
    merged = merge("weighted_average", _candidates(("a", 10, 0.0), ("b", 20.0, 0.0), ("c", 3, 0.0)))
    assert merged.value == pytest.approx(11.0)
    assert "plain mean" in merged.rationale


@pytest.mark.parametrize("bad", [True, "12", None, [1], {"value": 1}, float("nan")])
def test_it_rejects_non_numeric_outputs_for_weighted_average(bad):
    error = _fails(
        "invalid_outputs", "weighted_average", _candidates(("a", 1, 0.5), ("wobbly", bad, 0.5))
    )
    assert "wobbly" in error.detail


def test_it_takes_the_first_output_that_is_not_none():
    none, late = _candidates(("a", None, 0.9), ("b", "ok", 0.1))
    early = Candidate("c", "earliest", 0.1, T0 - timedelta(seconds=1))
    assert merge("first_valid", [none, late]).value == "ok"
    merged = merge("first_valid", [none, late, early])
    assert merged.value == "earliest"
    assert merged.contributors == ("c",)


def test_it_takes_the_first_output_passing_a_custom_check():
    candidates = _candidates(
        ("a", {"ok": False}, 0.9), ("b", {"ok": True}, 0.1), ("c", {"ok": True}, 0.5)
    )
    merged = merge("first_valid", candidates, is_valid=lambda output: output["ok"])
    assert merged.value == {"ok": True}
    assert merged.contributors == ("b",)


def test_it_fails_first_valid_when_nothing_passes():
    candidates = _candidates(("a", None, 0.9), ("b", 3, 0.1))
    _fails("no_valid_result", "first_valid", candidates[:1])
    _fails("no_valid_result", "first_valid", candidates, is_valid=lambda output: output == 4)


def test_it_merges_objects_with_higher_confidence_winning_conflicts():
    candidates = _candidates(
        ("a", {"dose": 5, "unit": "mg"}, 0.9), ("b", {"dose": 10, "note": "with food"}, 0.4)
    )
    merged = merge("merge_objects", candidates)
    assert merged.value == {"dose": 5, "unit": "mg", "note": "with food"}
    assert merged.contributors == ("a", "b")


def test_it_merges_objects_with_the_earlier_winning_a_confidence_tie():
    candidates = _candidates(("a", {"k": "a"}, 0.5), ("b", {"k": "b"}, 0.5), ("c", {"k": "c"}, 0.2))
    assert merge("merge_objects", candidates).value == {"k": "a"}


def test_it_rejects_non_object_outputs_for_merge_objects():
    error = _fails(
        "invalid_outputs", "merge_objects", _candidates(("a", {}, 0.5), ("listy", [1], 0.5))
    )
    assert "listy" in error.detail


def test_it_ranks_by_score_falling_back_to_confidence():
    candidates = _candidates(
        ("a", {"score": 0.2, "thought": "x"}, 0.9),
        ("b", "plain", 0.7),
        ("c", {"score": 3}, 0.1),
        ("d", {"score": True}, 0.4),
    )
    merged = merge("rank", candidates)
    assert [(e["agent"], e["score"]) for e in merged.value] == [
        ("c", 3),
        ("b", 0.7),
        ("d", 0.4),
        ("a", 0.2),
    ]
    assert merged.value[0]["output"] == {"score": 3}
    assert merged.contributors == ("c", "b", "d", "a")


def test_it_ranks_equal_scores_by_earliest_arrival():
    early, late = _candidates(("early", {"score": 1}, 0.1), ("late", "x", 1.0))
    assert merge("rank", [late, early]).contributors == ("early", "late")
