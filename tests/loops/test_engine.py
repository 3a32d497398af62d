"""The engine, stepped in this process with engine.advance() and, where time matters, a
frozen clock. The agents are the arena's (tests/loops/declarations.py)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from loops import engine, services
from loops.models import Agent, Bid, Blueprint, Contribution, Event, Iteration, LoopRun
from tests.conftest import drive, wait_for

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]
State = LoopRun.State


def start(blueprint: str, domain: str = "arena", **input) -> LoopRun:
    return services.run_start(domain=domain, blueprint=blueprint, input=input)


def bids_of(run: LoopRun, number: int = 1) -> dict[str, Bid]:
    iteration = run.iterations.get(number=number)
    return {bid.agent.name: bid for bid in iteration.bids.select_related("agent")}


def event_types(run: LoopRun) -> list[str]:
    return list(Event.objects.filter(run=run).order_by("seq").values_list("type", flat=True))


def test_it_runs_an_iteration_in_one_step_when_every_agent_answers_at_once():
    run = start("arena-all")

    engine.advance(run_id=run.pk)  # no clock moves: the bid window closes early (CONCEPTS 24)

    run.refresh_from_db()
    assert run.state == State.SUCCEEDED
    assert run.result["value"] == 42  # vote: alpha and gamma said 42, beta 41
    assert {name: bid.selected for name, bid in bids_of(run).items()} == {
        "alpha": True,
        "beta": True,
        "gamma": True,
    }
    assert run.iterations.get().contributions.count() == 3


def test_it_records_its_steps_as_ordered_events():
    run = drive(start("arena-all"))

    types = event_types(run)
    order = [
        "run.started",
        "iteration.broadcast",
        "bid.received",
        "selection.made",
        "agent.call.requested",
        "agent.call.responded",
        "iteration.merged",
        "validation.passed",
        "outcome.recorded",
        "run.exited",
    ]
    assert [t for t in dict.fromkeys(types)] == order  # first appearances, in this order
    seqs = list(Event.objects.filter(root_id=run.pk).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))  # gapless per root (CONCEPTS 52)


def test_it_leaves_agents_without_the_capability_out_of_the_audience():
    run = drive(start("arena-all"))

    assert "unskilled" not in bids_of(run)  # no bid request, no row (CONCEPTS 3)
    assert "refuser" not in bids_of(run)


def test_it_selects_the_top_k_by_confidence_with_the_reason():
    run = drive(start("arena-top2"))
    bids = bids_of(run)

    assert [n for n, b in sorted(bids.items()) if b.selected] == ["alpha", "gamma"]
    assert bids["alpha"].selection_reason == "selected: rank 1 of 3 by confidence 0.90 (top 2)"
    assert bids["beta"].selection_reason.startswith("not selected: rank 3 of 3")
    assert set(run.iterations.get().contributions.values_list("agent__name", flat=True)) == {
        "alpha",
        "gamma",
    }


def test_it_waits_for_the_bid_window_and_counts_silence_as_a_decline():
    t0 = timezone.now()
    run = start("arena-window")

    engine.advance(run_id=run.pk, now=t0)
    iteration = run.iterations.get()
    assert iteration.status == Iteration.Status.BIDDING  # mute has not answered
    assert not iteration.contributions.exists()  # nothing selected before the window ends

    engine.advance(run_id=run.pk, now=t0 + timedelta(seconds=1))
    assert Iteration.objects.get(pk=iteration.pk).status == Iteration.Status.BIDDING

    drive(run, now=t0 + timedelta(seconds=2.1))
    bids = bids_of(run)
    assert bids["mute"].decision == Bid.Decision.DECLINE
    assert bids["mute"].reason == "no answer in window"
    assert bids["mute"].selected is False
    assert bids["alpha"].selected is True
    run.refresh_from_db()
    assert run.state == State.SUCCEEDED


def test_it_fails_below_the_quorum_when_the_policy_says_so():
    run = drive(start("arena-quorum-fail"))

    assert run.state == State.FAILED
    assert run.exit_reason == LoopRun.ExitReason.INSUFFICIENT_BIDS
    assert bids_of(run)["refuser"].reason == "not my field"
    assert not Contribution.objects.filter(iteration__run=run).exists()  # CONCEPTS 20


def test_it_broadcasts_again_below_the_quorum_until_a_resource_bound():
    run = drive(start("arena-quorum-retry"))

    assert run.state == State.EXHAUSTED
    assert run.exit_reason == LoopRun.ExitReason.MAX_ITERATIONS
    assert list(run.iterations.values_list("outcome", flat=True)) == ["no_quorum", "no_quorum"]


def test_it_feeds_validation_feedback_into_the_next_round():
    run = drive(start("arena-feedback"))

    first, second = run.iterations.order_by("number")
    assert first.outcome == Iteration.Outcome.REJECTED
    assert second.broadcast["feedback"] == first.feedback
    assert second.outcome == Iteration.Outcome.VALIDATED
    assert run.state == State.SUCCEEDED


def test_it_fails_when_validation_fails_every_round():
    run = drive(start("arena-stubborn"))

    assert run.state == State.FAILED
    assert run.exit_reason == LoopRun.ExitReason.VALIDATION_EXHAUSTED
    assert run.iterations.count() == 2  # validation_rounds=2, before max_iterations=5


def test_it_rejects_a_second_answer_from_the_same_agent():
    run = drive(start("arena-all"))
    iteration = run.iterations.get()

    with pytest.raises(IntegrityError), transaction.atomic():
        Bid.objects.create(
            iteration=iteration,
            agent=Agent.objects.get(name="alpha"),
            decision=Bid.Decision.BID,
            confidence=0.1,
        )


def test_it_runs_a_requested_child_and_refuses_an_undeclared_one():
    run = drive(start("arena-spawn"))

    child = run.children.get()
    assert child.blueprint.name == "arena-child"
    assert (child.depth, child.root_id, child.state) == (1, run.pk, State.SUCCEEDED)
    refusal = Event.objects.get(run=run, type="child.refused").payload
    assert refusal["blueprint"] == "lab-micro"
    assert "not a declared child" in refusal["reason"]
    assert run.context["children"]["arena-child"]["result"]["value"] == 42
    assert run.state == State.SUCCEEDED


def test_it_refuses_a_child_the_remaining_budget_cannot_cover():
    run = drive(start("arena-budget"))

    assert not run.children.exists()
    assert "budget" in Event.objects.get(run=run, type="child.refused").payload["reason"]
    assert run.cost == pytest.approx(0.5)
    assert run.cost_reserved == pytest.approx(0)


def test_it_gives_a_child_at_most_the_parents_remaining_budget():
    run = drive(start("lab-main", domain="lab", x=3))
    sub = run.children.get()

    assert run.state == State.SUCCEEDED
    assert sub.budget == pytest.approx(1.0 - 0.01)  # lab-main's budget less the planner's cost
    assert run.cost_reserved == pytest.approx(0)


def test_it_returns_results_up_a_three_level_stack():
    run = drive(start("lab-main", domain="lab", x=5))
    sub = run.children.get()
    micro = sub.children.get()

    assert [r.depth for r in (run, sub, micro)] == [0, 1, 2]
    assert {r.root_id for r in (run, sub, micro)} == {run.pk}
    assert micro.result == 25
    assert sub.context["phases"]["measure"] == {"lab-micro": 25}  # the parent's merge saw it
    assert run.result == {"lab-sub": {"square": 25, "summary": "the square is 25"}}
    assert run.tokens == 5 + 7 + 3


def test_it_does_nothing_for_a_paused_run_and_resumes_where_it_stood():
    run = start("arena-all")
    services.run_pause(run_id=run.pk)

    engine.advance(run_id=run.pk)
    assert not run.iterations.exists()

    services.run_resume(run_id=run.pk)
    assert drive(run).state == State.SUCCEEDED


def test_it_cancels_a_whole_stack():
    run = start("lab-main", domain="lab", x=2)
    drive(run, steps=2)  # plan, then lab-sub is called
    services.run_cancel(run_id=run.pk, reason="test")

    states = set(LoopRun.objects.filter(root_id=run.pk).values_list("state", flat=True))
    assert states == {State.CANCELLED}
    assert not LoopRun.objects.filter(root_id=run.pk, exit_reason="").exists()  # CONCEPTS 38


def test_it_is_a_no_op_when_replayed_and_for_a_deleted_run():
    run = drive(start("arena-all"))
    before = (Iteration.objects.count(), Bid.objects.count(), Event.objects.count())

    engine.advance(run_id=run.pk)
    engine.advance(run_id=10**9)

    assert (Iteration.objects.count(), Bid.objects.count(), Event.objects.count()) == before


def test_it_leaves_a_run_held_by_another_worker_alone():
    run = start("arena-all")
    LoopRun.objects.filter(pk=run.pk).update(
        lease_worker="elsewhere:1", lease_expires_at=timezone.now() + timedelta(seconds=30)
    )

    engine.advance(run_id=run.pk)

    assert not run.iterations.exists()


def test_it_exhausts_a_run_past_its_deadline_with_the_best_result_so_far():
    run = start("lab-main", domain="lab", x=2)
    LoopRun.objects.filter(pk=run.pk).update(deadline_at=timezone.now() - timedelta(seconds=1))

    run = drive(run)

    assert run.state == State.EXHAUSTED
    assert run.exit_reason == LoopRun.ExitReason.DEADLINE


def test_it_keeps_a_late_contribution_but_never_merges_it():
    run = drive(start("arena-late"))  # gather deadline 150 ms; sleepy answers after 300 ms

    late = Contribution.objects.get(iteration__run=run, agent__name="sleepy")
    assert (late.status, late.late, late.output) == ("completed", True, {"value": "late"})
    assert run.result["value"] == 42  # quick's answer, though sleepy bid higher (CONCEPTS 10)


def test_it_runs_the_four_loop_conversation():
    run = drive(start("arena-converse", text="5 mg twice a day"))
    phases = {i.phase_name: i for i in run.iterations.filter(outcome="validated")}

    assert run.state == State.SUCCEEDED
    assert phases["in"].merged == {"intent": "dose", "confidence": 0.6}  # CONCEPTS 27
    context_winners = set(
        phases["context"].bids.filter(selected=True).values_list("agent_id", flat=True)
    )
    do = phases["do"]
    assert set(do.broadcast["audience"]) == context_winners  # CONCEPTS 28
    assert set(do.contributions.values_list("agent_id", flat=True)) == context_winners  # 29
    rounds = list(run.iterations.filter(phase_name="out").order_by("number"))
    assert [r.outcome for r in rounds] == ["rejected", "validated"]  # CONCEPTS 30
    assert "format" in rounds[0].feedback[0]
    assert rounds[1].broadcast["feedback"] == rounds[0].feedback
    assert run.result == {"text": "formatted", "format": "plain"}


def test_it_stops_when_the_score_stops_improving():
    run = drive(start("arena-no-progress"))

    assert (run.state, run.exit_reason) == (State.EXHAUSTED, LoopRun.ExitReason.NO_PROGRESS)
    assert run.iteration == 3  # 0.50, 0.51, 0.51 with epsilon 0.02 and k 2 (CONCEPTS 68)
    assert run.result == {"score": 0.51}


def test_it_gives_each_exit_its_own_reason():
    score = drive(start("arena-score-target"))
    budget = drive(start("arena-spend"))

    assert (score.state, score.exit_reason) == (State.SUCCEEDED, "score_target")
    assert (budget.state, budget.exit_reason) == (State.EXHAUSTED, "budget")
    assert budget.cost == pytest.approx(0.8)  # a third call of 0.4 would pass the budget of 1.0
    assert budget.iterations.count() == 3
    refused = Contribution.objects.get(iteration__run=budget, iteration__number=3)
    assert (refused.status, refused.error_class) == ("failed", "budget")


def test_it_broadcasts_only_to_remote_agents_with_a_fresh_heartbeat():
    arena = Agent.objects.get(name="alpha").domain
    fresh = Agent.objects.create(
        domain=arena,
        name="fresh",
        adapter="http",
        capabilities=["remote"],
        heartbeat_at=timezone.now(),
    )
    Agent.objects.create(
        domain=arena,
        name="stale",
        adapter="http",
        capabilities=["remote"],
        heartbeat_at=timezone.now() - timedelta(minutes=5),
    )
    t0 = timezone.now()
    run = start("arena-remote")

    engine.advance(run_id=run.pk, now=t0)  # broadcast; the window is 1 s
    drive(run, now=t0 + timedelta(seconds=2))

    assert run.iterations.get(number=1).broadcast["audience"] == [fresh.pk]  # CONCEPTS 33
    assert bids_of(run)["fresh"].reason == "no answer in window"
    assert "stale" not in bids_of(run)


def test_it_refuses_a_spawn_past_max_depth_and_records_why():
    run = drive(start("arena-recursive"))
    child = run.children.get()

    assert child.depth == 1 and not child.children.exists()
    refusal = Event.objects.get(run=child, type="child.refused").payload
    assert refusal == {
        "blueprint": "arena-recursive",
        "reason": "a child at depth 2 would pass the depth bound",
    }  # CONCEPTS 43


@pytest.mark.django_db(transaction=True)
def test_it_lets_only_one_of_two_racing_steps_work():
    """Two threads step the same run at once: one iteration, one merge (CONCEPTS 6, 25)."""
    run = start("arena-all")
    barrier = threading.Barrier(2)

    def step() -> None:
        try:
            barrier.wait()
            engine.advance(run_id=run.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=step) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # A worker of the session may race too, through the step enqueued at the start.
    wait_for(lambda: LoopRun.objects.get(pk=run.pk).is_terminal)
    assert Iteration.objects.filter(run=run).count() == 1
    assert Event.objects.filter(run=run, type="iteration.merged").count() == 1


def test_it_wakes_a_parent_left_waiting_after_its_children_ended():
    """The reaper's backstop (H4, CONCEPTS 38): a waiting parent none of whose children is
    live goes back to running; one with a live child keeps waiting."""
    orphan, waiting = start("arena-spawn"), start("arena-spawn")
    for parent, child_state in ((orphan, State.SUCCEEDED), (waiting, State.RUNNING)):
        LoopRun.objects.filter(pk=parent.pk).update(state=State.WAITING)
        LoopRun.objects.create(
            blueprint=Blueprint.objects.get(name="arena-child"),
            domain=parent.domain,
            parent=parent,
            root=parent,
            depth=1,
            state=child_state,
        )

    engine.reclaim()

    assert LoopRun.objects.get(pk=orphan.pk).state == State.RUNNING
    assert LoopRun.objects.get(pk=waiting.pk).state == State.WAITING
    assert Event.objects.filter(run=orphan, type="run.woken").exists()


def test_it_reenqueues_a_run_whose_worker_died():
    run = start("arena-all")
    LoopRun.objects.filter(pk=run.pk).update(
        lease_worker="dead-host:1:1", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    assert engine.reclaim() == 1  # its step goes back in the queue
    engine.advance(run_id=run.pk)  # and the expired lease no longer stands in the way

    run.refresh_from_db()
    assert run.state == State.SUCCEEDED
