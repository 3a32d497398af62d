"""The meta-learning layer (Loopcraft L3; CONCEPTS 53, 64, 65, 70): outcomes counted into
each agent's posterior exactly once, Thompson sampling over them, and the layer tags."""

from __future__ import annotations

import random
import threading
from types import SimpleNamespace

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from loops import learning, services
from loops.declare import BLUEPRINTS
from loops.engine.broadcast import select
from loops.models import Agent, AgentStat, Bid, Contribution, Event, LoopRun
from tests.conftest import drive

State = LoopRun.State


pytestmark = pytest.mark.usefixtures("declared")


def _run_to_end(blueprint: str, domain: str = "arena", **input) -> LoopRun:
    return drive(services.run_start(domain=domain, blueprint=blueprint, input=input))


def _stat(name: str, task_type: str = "arena.ask") -> AgentStat:
    return AgentStat.objects.get(agent__name=name, task_type=task_type)


@pytest.mark.django_db
def test_it_counts_each_finished_contribution_once_into_its_posterior():
    validated = _run_to_end("arena-all")  # every agent's answer merged and validated
    rejected = _run_to_end("arena-feedback")  # round 1 rejected, round 2 validated
    contributions = Contribution.objects.filter(iteration__run__in=[validated, rejected])

    claimed = learning.stats_fold()
    again = learning.stats_fold()

    assert claimed == contributions.count() and again == 0
    assert not contributions.filter(counted=False).exists()
    for name in ("alpha", "beta", "gamma"):
        stat = _stat(name)
        mine = contributions.filter(agent__name=name)
        wins = mine.filter(iteration__outcome="validated").count()
        losses = mine.exclude(iteration__outcome="validated").count()
        assert (stat.alpha, stat.beta, stat.n) == (1 + wins, 1 + losses, wins + losses)
        assert wins >= 1
    assert _stat("alpha").beta >= 2  # its rejected first round counted against it


@pytest.mark.django_db(transaction=True)
def test_it_counts_once_when_sweeps_race():
    for _ in range(6):
        _run_to_end("arena-all")
    total = Contribution.objects.count()
    claimed: list[int] = []

    def sweep() -> None:
        try:
            while n := learning.stats_fold(limit=3):
                claimed.append(n)
        finally:
            connection.close()

    sweepers = [threading.Thread(target=sweep) for _ in range(4)]
    for sweeper in sweepers:
        sweeper.start()
    for sweeper in sweepers:
        sweeper.join(30)

    assert sum(claimed) == total
    assert AgentStat.objects.aggregate(n=Sum("n"))["n"] == total


@pytest.mark.django_db
def test_it_counts_a_contribution_retried_across_workers_once():
    run = _run_to_end("arena-all")
    contribution = Contribution.objects.filter(iteration__run=run).first()
    # A second worker re-made the call (at least once, H4): more attempts, one contribution.
    Contribution.objects.filter(pk=contribution.pk).update(
        attempts=[{"n": 1, "error_class": "timeout"}, {"n": 2, "error_class": ""}]
    )

    learning.stats_fold()
    learning.stats_fold()

    assert (
        _stat(contribution.agent.name).n
        == Contribution.objects.filter(agent=contribution.agent).count()
    )


@pytest.mark.django_db
def test_it_prefers_the_agent_with_the_better_record_in_thompson_sampling():
    spec = BLUEPRINTS["arena-thompson"]
    now = timezone.now()
    bids = [
        SimpleNamespace(agent_id=1, decision=Bid.Decision.BID, confidence=0.8, received_at=now),
        SimpleNamespace(agent_id=2, decision=Bid.Decision.BID, confidence=0.8, received_at=now),
    ]
    stats = {1: (40.0, 2.0), 2: (2.0, 40.0)}  # A succeeded 39 times, B failed 39 times
    rng = random.Random(7)  # noqa: S311 (a seeded draw, not a secret)

    wins = [select(spec, bids, stats, rng) for _ in range(1000)]

    share = sum(1 for chosen in wins if chosen[1][0]) / len(wins)
    assert share >= 0.95
    won, reason = wins[0][1]
    assert won and "θ=0." in reason and "Beta(40, 2)" in reason and "thompson" in reason
    # The same seed draws the same: a replayed step selects the same agents.
    assert select(spec, bids, stats, random.Random(7)) == wins[0]  # noqa: S311


@pytest.mark.django_db
def test_it_writes_the_draw_into_each_bids_selection_reason():
    for name, (alpha, beta) in {"alpha": (30, 1), "beta": (1, 30), "gamma": (1, 30)}.items():
        AgentStat.objects.create(
            agent=Agent.objects.get(name=name), task_type="arena.ask", alpha=alpha, beta=beta
        )

    run = _run_to_end("arena-thompson")

    bids = {b.agent.name: b for b in Bid.objects.filter(iteration__run=run, iteration__number=1)}
    assert bids["alpha"].selected and not bids["beta"].selected
    assert all("θ=" in b.selection_reason and "Beta(" in b.selection_reason for b in bids.values())
    assert run.state == "succeeded"


@pytest.mark.django_db
def test_it_tags_each_layer_in_the_order_the_layers_nest():
    run = _run_to_end("arena-all")

    tagged = [
        (e.type, e.payload["layer"])
        for e in Event.objects.filter(run=run).order_by("seq")
        if "layer" in e.payload
    ]

    layers = [layer for _, layer in tagged]
    # meta-learning (selection) → retry (each call) → validation → meta-learning (outcomes)
    assert layers[0] == "meta" and layers[-1] == "meta"
    assert layers == ["meta", *["retry"] * (len(layers) - 3), "validation", "meta"]
    assert len(layers) == 3 + 2 * 3  # three calls, each requested and answered
    assert ("outcome.recorded", "meta") in tagged and ("selection.made", "meta") in tagged


@pytest.mark.django_db
def test_it_adds_up_the_tokens_of_its_calls_to_the_runs_tokens():
    run = _run_to_end("lab-main", domain="lab", x=5)

    responded = Event.objects.filter(root=run, type="agent.call.responded")
    per_run: dict[int, int] = {}
    for event in responded:
        per_run[event.run_id] = per_run.get(event.run_id, 0) + event.payload["tokens"]

    assert run.state == "succeeded"
    for frame in LoopRun.objects.filter(root=run):
        own = per_run.get(frame.pk, 0)
        below = sum(c.tokens for c in LoopRun.objects.filter(parent=frame))
        assert frame.tokens == own + below  # a child's tokens are settled on its parent
    assert run.tokens == sum(per_run.values())


@pytest.mark.django_db
def test_it_lets_no_validator_agent_check_a_merge_it_contributed_to():
    """Maker ≠ checker (CONCEPTS 63): the checker that also worked sits out, with the reason;
    the one that did not work checks."""
    run = _run_to_end("arena-peer-review")

    iteration = run.iterations.get(number=1)
    makers = set(iteration.contributions.values_list("agent__name", flat=True))
    assert makers == {"peer", "maker-checker"}
    assert iteration.validation["skipped"] == [
        {"validator": "agent:maker-checker", "reason": "maker-checker contributed to this merge"}
    ]
    assert iteration.validation["score"] == 0.5  # the outside checker's verdict
    assert run.state == "succeeded"


@pytest.mark.django_db
def test_it_expands_only_the_best_thoughts_down_to_the_depth_bound():
    """Tree of Thoughts (CONCEPTS 62) with k=3, b=1, d=2: two expanded runs (one per level)
    and four pruned candidates (two per level); the leaf keeps its best thought."""
    root = _run_to_end("arena-tot")

    frames = list(LoopRun.objects.filter(root=root).order_by("depth"))
    pruned = Event.objects.filter(root=root, type="thoughts.pruned")
    assert [f.depth for f in frames] == [0, 1, 2]
    assert all(f.state == "succeeded" for f in frames)
    assert [f.call_key for f in frames[1:]] == ["arena-tot#1", "arena-tot#1"]
    assert [e.payload["kept"] for e in pruned] == [["thinker-deep"], ["thinker-deep"]]
    assert sum(len(e.payload["pruned"]) for e in pruned) == 4
    assert frames[2].result["score"] == 0.9  # the leaf's best thought
    assert frames[1].input["thought"]["score"] == 0.9  # the expanded one was the best
