from __future__ import annotations

import pytest

from loops import declare
from loops.declare import DeclarationError, blueprint
from loops.specs import Exits, Phase, Policy

ASK = [Phase("ask", task_type="t.ask")]


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch):
    monkeypatch.setattr(declare, "BLUEPRINTS", dict(declare.BLUEPRINTS))


def declare_with(**fields):
    fields.setdefault("kind", "main")
    fields.setdefault("domain", "lab")
    fields.setdefault("phases", ASK)
    fields.setdefault("policy", Policy(exits=Exits(max_iterations=3)))
    return blueprint(fields.pop("name", "t-bp"), **fields)


@pytest.mark.parametrize(
    ("exits", "message"),
    [
        (Exits(), "needs a resource bound"),
        (Exits(quality=(), max_iterations=3), "needs at least one quality exit"),
        (Exits(quality=("score_target",), budget=1.0), r"needs Exits\(score_target"),
    ],
)
def test_it_rejects_a_blueprint_without_bounds(exits, message):
    with pytest.raises(DeclarationError, match=message):
        declare_with(policy=Policy(exits=exits))


@pytest.mark.parametrize(
    "bound", [Exits(max_iterations=1), Exits(deadline_s=10), Exits(budget=0.5)]
)
def test_it_accepts_any_one_resource_bound(bound):
    assert declare_with(policy=Policy(exits=bound)).policy.exits == bound


def test_it_rejects_a_micro_loop_with_children():
    with pytest.raises(DeclarationError, match="micro-loop calls no children"):
        declare_with(kind="micro", children=("lab-micro",))


def test_it_rejects_a_self_spawning_blueprint_without_max_depth():
    with pytest.raises(DeclarationError, match="recurse without bound"):
        declare_with(name="t-self", children=("t-self",))

    assert declare_with(name="t-self", children=("t-self",), max_depth=3).max_depth == 3


def test_it_rejects_a_cycle_through_several_blueprints_without_a_bound():
    declare_with(name="t-a", children=("t-b",))
    declare_with(name="t-b", kind="sub", children=("t-a",))

    with pytest.raises(DeclarationError, match="t-a → t-b → t-a can recurse without bound"):
        declare.check_graph()


def test_it_rejects_a_phase_calling_an_undeclared_child():
    with pytest.raises(DeclarationError, match="not among its children"):
        declare_with(phases=[Phase("go", call=("lab-micro",))])


def test_it_rejects_unknown_strategies_and_validators():
    with pytest.raises(DeclarationError, match="unknown merge strategy"):
        declare_with(merge="telepathy")
    with pytest.raises(DeclarationError, match="unknown validators"):
        declare_with(validators=("no-such-validator",))
