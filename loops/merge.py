"""Merge strategies for the contributions of one loop iteration (CONCEPTS 22). Pure functions with
no Django or database, so the engine may call them inside or outside a transaction."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from typing import Any


@dataclass(frozen=True)
class Candidate:
    agent: str
    output: Any
    confidence: float
    received_at: datetime


@dataclass(frozen=True)
class Merged:
    value: Any
    rationale: str
    contributors: tuple[str, ...]


class MergeError(Exception):
    code: str
    detail: str

    def __init__(self, code: str, detail: str) -> None:
        # Both go to args so that copy and pickle can rebuild the error.
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class _Options:
    threshold: float
    is_valid: Callable[[Any], bool]


def _names(cands: Sequence[Candidate]) -> tuple[str, ...]:
    return tuple(c.agent for c in cands)


def _is_number(value: Any) -> bool:
    # bool is an int subclass, but a yes/no answer is not a quantity to average.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _canonical(c: Candidate) -> str:
    try:
        return json.dumps(c.output, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise MergeError("invalid_outputs", f"{c.agent} returned non-JSON ({exc}).") from exc


def _groups(cands: list[Candidate]) -> list[list[Candidate]]:
    """Candidates grouped by identical output; groups in order of their first arrival."""
    groups: dict[str, list[Candidate]] = {}
    for c in cands:
        groups.setdefault(_canonical(c), []).append(c)
    return list(groups.values())


def _support(group: list[Candidate]) -> float:
    # Rounded so that float noise (0.1 + 0.2) cannot break what is really a tie.
    return round(math.fsum(c.confidence for c in group), 9)


def _leader(groups: list[list[Candidate]]) -> list[Candidate]:
    # max() keeps the first of equal keys, and groups are in first-arrival order.
    return max(groups, key=lambda g: (len(g), _support(g)))


def _highest_confidence(cands: list[Candidate], opts: _Options) -> Merged:
    best = max(cands, key=attrgetter("confidence"))
    tied = sum(c.confidence == best.confidence for c in cands)
    note = f" (earliest of {tied} tied)" if tied > 1 else ""
    rationale = f"highest confidence {best.confidence:g} from {best.agent} of {len(cands)} results"
    return Merged(best.output, rationale + note, (best.agent,))


def _collect_all(cands: list[Candidate], opts: _Options) -> Merged:
    value = [{"agent": c.agent, "output": c.output, "confidence": c.confidence} for c in cands]
    return Merged(value, f"collected all {len(cands)} results in arrival order", _names(cands))


def _agreement(cands: list[Candidate], passes: Callable[[int, int], bool], need: str) -> Merged:
    winners = _leader(_groups(cands))
    count, total = len(winners), len(cands)
    share = f"{count}/{total} ({count / total:.2f})"
    if not passes(count, total):
        raise MergeError("no_consensus", f"The best share {share} does not reach {need}.")
    return Merged(winners[0].output, f"{share} results agree, reaching {need}", _names(winners))


def _consensus(cands: list[Candidate], opts: _Options) -> Merged:
    # Compare the share itself: threshold * total picks up float error (0.6 * 5 > 3).
    need = f"the threshold {opts.threshold:g}"
    return _agreement(cands, lambda n, total: n / total >= opts.threshold, need)


def _majority(cands: list[Candidate], opts: _Options) -> Merged:
    return _agreement(cands, lambda n, total: 2 * n > total, "a strict majority")


def _vote(cands: list[Candidate], opts: _Options) -> Merged:
    groups = _groups(cands)
    winners = _leader(groups)
    voters = ", ".join(_names(winners))
    rationale = f"{len(winners)} of {len(cands)} votes for the output of {voters}"
    tied = [g for g in groups if g is not winners and len(g) == len(winners)]
    if tied:
        decided_by_support = all(_support(g) < _support(winners) for g in tied)
        by = f"summed confidence {_support(winners):g}" if decided_by_support else "earlier arrival"
        rationale += f", winning a tie on {by}"
    return Merged(winners[0].output, rationale, _names(winners))


def _weighted_average(cands: list[Candidate], opts: _Options) -> Merged:
    for c in cands:
        if not _is_number(c.output) or not math.isfinite(c.output):
            raise MergeError("invalid_outputs", f"{c.agent} returned {c.output!r}, not a number.")
    weight = math.fsum(c.confidence for c in cands)
    if weight == 0:
        value = math.fsum(c.output for c in cands) / len(cands)
        rationale = f"plain mean of {len(cands)} results, as every confidence is 0"
    else:
        value = math.fsum(c.output * c.confidence for c in cands) / weight
        rationale = f"confidence-weighted average of {len(cands)} results"
    return Merged(value, rationale, _names(cands))


def _first_valid(cands: list[Candidate], opts: _Options) -> Merged:
    for position, c in enumerate(cands, start=1):
        if opts.is_valid(c.output):
            rationale = f"first valid result, from {c.agent} ({position} of {len(cands)} arrived)"
            return Merged(c.output, rationale, (c.agent,))
    raise MergeError("no_valid_result", f"None of the {len(cands)} results is valid.")


def _merge_objects(cands: list[Candidate], opts: _Options) -> Merged:
    for c in cands:
        if not isinstance(c.output, dict):
            raise MergeError("invalid_outputs", f"{c.agent} returned {c.output!r}, not an object.")
    # Later updates win, so apply from the weakest up; among equals the earliest goes last.
    order = sorted(range(len(cands)), key=lambda i: (cands[i].confidence, -i))
    value: dict[str, Any] = {}
    for i in order:
        value.update(cands[i].output)
    rationale = (
        f"merged {len(cands)} objects into {len(value)} keys, higher confidence winning conflicts"
    )
    return Merged(value, rationale, _names(cands))


def _score(c: Candidate) -> float:
    if isinstance(c.output, dict) and _is_number(c.output.get("score")):
        return c.output["score"]
    return c.confidence


def _rank(cands: list[Candidate], opts: _Options) -> Merged:
    # sorted() is stable, so equal scores keep arrival order.
    ranked = sorted(cands, key=lambda c: -_score(c))
    value = [{"agent": c.agent, "output": c.output, "score": _score(c)} for c in ranked]
    top = value[0]
    rationale = f"ranked {len(cands)} results by score, {top['agent']} first at {top['score']:g}"
    return Merged(value, rationale, _names(ranked))


_STRATEGIES: dict[str, Callable[[list[Candidate], _Options], Merged]] = {
    "highest_confidence": _highest_confidence,
    "collect_all": _collect_all,
    "consensus": _consensus,
    "majority": _majority,
    "vote": _vote,
    "weighted_average": _weighted_average,
    "first_valid": _first_valid,
    "merge_objects": _merge_objects,
    "rank": _rank,
}

STRATEGIES: frozenset[str] = frozenset(_STRATEGIES)


def merge(
    strategy: str,
    candidates: Sequence[Candidate],
    *,
    min_results: int = 1,
    threshold: float = 0.5,
    is_valid: Callable[[Any], bool] | None = None,
) -> Merged:
    """Merge the contributions of one iteration with the named strategy.

    1. An unknown strategy is a programming error (ValueError), not a run outcome.
    2. Fewer than min_results candidates, or none at all, fails every strategy.
    3. The strategy sees the candidates in arrival order; sorting is stable for equal times.
    """
    if strategy not in _STRATEGIES:
        raise ValueError(f"unknown merge strategy {strategy!r}; known: {sorted(STRATEGIES)}")
    if len(candidates) < max(min_results, 1):
        raise MergeError(
            "insufficient_results",
            f"{len(candidates)} results arrived but at least {max(min_results, 1)} are needed.",
        )
    options = _Options(threshold, is_valid or (lambda output: output is not None))
    return _STRATEGIES[strategy](sorted(candidates, key=attrgetter("received_at")), options)
