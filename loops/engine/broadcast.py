"""Step 1: broadcast the task, record bids and declines, select, claim the calls."""

from __future__ import annotations

import contextvars
import logging
import random
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import datetime, timedelta

from django.utils import timezone

from loops import learning
from loops.agents import AgentError, adapter_for
from loops.engine import writes
from loops.engine.exits import carry_on, finish, mark_closed
from loops.engine.lease import AudienceChanged, Reason, State, Status, StepAborted, release
from loops.engine.step import Step
from loops.engine.tx import Tx, step_tx
from loops.messages import Bid as BidAnswer
from loops.messages import Decline, Task
from loops.models import Agent, AgentStat, Bid, Contribution, Iteration, LoopRun
from loops.services import cost_reserve_locked, enqueue
from loops.specs import BlueprintSpec, Phase
from oversight import gates

logger = logging.getLogger(__name__)
BID_THREADS = 8  # remote bids asked at once in one broadcast
BID_GRACE_S = 1.0


def audience_of(step: Step, phase: Phase) -> list[Agent]:
    """The claim's live agents of the domain with every required capability (CONCEPTS 3,
    33), less those an open agent breaker keeps out."""
    agents = step.agents
    if phase.audience_from:  # only the winners of an earlier phase (CONCEPTS 28, 29)
        winners = set(step.run.context.get("winners", {}).get(phase.audience_from, []))
        agents = [agent for agent in agents if agent.pk in winners]
    required = set(phase.capabilities)
    candidates = [
        agent
        for agent in agents
        if required <= set(agent.capabilities)
        and (phase.task_type in agent.task_types or not agent.task_types)
    ]
    gated = [agent.pk for agent in candidates if agent.breaker_not_closed]  # type: ignore[attr-defined]
    excluded = gates.agents_excluded(step.run, gated) if gated else set()
    return [agent for agent in candidates if agent.pk not in excluded]


def task_for(run: LoopRun, spec: BlueprintSpec, number: int, phase: int, feedback) -> Task:
    p = spec.phases[phase]
    return Task(run.pk, number, p.name, p.task_type, p.payload, run.context, tuple(feedback))


def open_iteration(step: Step) -> tuple[Iteration, list[Contribution]]:
    """Broadcast the phase's task and record the answers; select at once if all answered
    (early close, CONCEPTS 24), so the iteration is written as executing at once. Returns
    the iteration and the calls claimed (none while bidding, or if it closed at once)."""
    run, spec, now = step.run, step.spec, step.now
    assert spec is not None
    phase, number = spec.phases[run.phase], run.iteration + 1
    feedback = run.context.get("feedback", [])
    audience = [] if phase.call else audience_of(step, phase)
    answers = ask_bids(audience, task_for(run, spec, number, run.phase, feedback), spec)
    answered_at = timezone.now()
    early = not phase.call and all(answers[agent.pk] is not None for agent in audience)
    iteration = Iteration(
        run_id=run.pk,
        number=number,
        phase=run.phase,
        phase_name=phase.name,
        status=Iteration.Status.EXECUTING if phase.call or early else Iteration.Status.BIDDING,
        broadcast={
            "task_type": phase.task_type,
            "payload": phase.payload,
            "capabilities": list(phase.capabilities),
            "feedback": feedback,
            "audience": [a.pk for a in audience],
            "call": list(phase.call),
        },
        bid_window_ends_at=now + timedelta(milliseconds=spec.bid_window_ms),
        gather_deadline_at=now + timedelta(milliseconds=spec.gather_deadline_ms),
        started_at=now,
    )
    bids = [
        bid_row(agent, answers[agent.pk], now, answered_at)
        for agent in audience
        if answers[agent.pk] is not None
    ]
    with step_tx(run.pk, agents=[a.pk for a in audience]) as tx:
        run = step.run = tx.require()
        if run.iteration + 1 != number:
            raise StepAborted  # another worker opened it first
        if tx.tripped - {a.pk for a in audience if a.breaker_not_closed}:  # type: ignore[attr-defined]
            raise AudienceChanged  # read before a breaker opened: start again from a claim
        run.iteration, run.updated_at = number, answered_at
        size = {"iteration": number, "phase": phase.name, "audience": len(audience)}
        tx.trace.add(run.pk, "iteration.broadcast", size)
        for b in bids:
            tx.trace.add(run.pk, "bid.received", {"agent": b.agent_id, "decision": b.decision})
        calls = select_and_claim(step, tx, iteration, bids) if early else []
        writes.write_open(run, iteration, bids, calls, tx.trace)
    return iteration, calls


def callable_here(agent: Agent) -> bool:
    """Whether this worker can call the agent: an implementation it has, or an address."""
    return adapter_for(agent) is not None


Answer = BidAnswer | Decline | None


def ask_bids(audience: list[Agent], task: Task, spec: BlueprintSpec) -> dict[int, Answer]:
    """Every audience member's answer, outside any transaction. In-process agents answer in
    turn; remote ones are asked at once, in threads, each for at most the bid window."""
    window_s = spec.bid_window_ms / 1000
    remote = [a for a in audience if (adapter := adapter_for(a)) is not None and adapter.remote]
    if not remote:
        return {agent.pk: ask_bid(agent, task, window_s) for agent in audience}
    # The threads make HTTP calls only: they open no database connection. Each runs in a
    # copy of this thread's context, so what it logs carries the step's run and root ids.
    pool = ThreadPoolExecutor(max_workers=min(BID_THREADS, len(remote)))
    try:
        asked = {
            a.pk: pool.submit(contextvars.copy_context().run, ask_bid, a, task, window_s)
            for a in remote
        }
        answers = {a.pk: ask_bid(a, task, window_s) for a in audience if a.pk not in asked}
        # Each call has its timeout; this bounds a server that answers a byte at a time.
        done, _ = wait(asked.values(), timeout=window_s + BID_GRACE_S)
        for pk, future in asked.items():
            late = Decline("no answer in the bid window")
            answers[pk] = future.result() if future in done else late
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return answers


def ask_bid(agent: Agent, task: Task, window_s: float | None = None) -> Answer:
    """The agent's bid or decline; None means no answer (yet). An agent's error (a bug, a
    timeout, a refusal) is its decline, with the reason, not the loop's failure."""
    adapter = adapter_for(agent)
    if adapter is None:
        return None  # another worker's agent, or a remote one without an address
    try:
        return adapter.bid(task, window_s)
    except AgentError as exc:
        prefix = "no answer" if exc.error_class == "timeout" else f"bid failed ({exc.error_class})"
        return Decline(f"{prefix}: {exc.message}")
    except Exception as exc:
        logger.warning("agent %s failed to bid: %s", agent, exc)
        return Decline(f"bid raised {type(exc).__name__}: {exc}")


def bid_row(agent: Agent, answer: Answer, asked_at: datetime, received_at: datetime) -> Bid:
    common = {"agent": agent, "started_at": asked_at, "received_at": received_at}
    if isinstance(answer, BidAnswer):
        confidence = min(1.0, max(0.0, answer.confidence))
        return Bid(
            **common, decision=Bid.Decision.BID, confidence=confidence, est_cost=answer.est_cost
        )
    return Bid(**common, decision=Bid.Decision.DECLINE, reason=getattr(answer, "reason", ""))


def close_bidding(step: Step, iteration: Iteration) -> list[Contribution] | None:
    """Close the window once it passed (CONCEPTS 23): silence is a decline; then select.
    None while the window is still open: the step ends, and comes back when it closes."""
    run, now = step.run, step.now
    audience = iteration.broadcast["audience"]
    bids = list(iteration.bids.select_related("agent"))
    answered = {bid.agent_id for bid in bids}
    if len(answered) < len(audience) and now < iteration.bid_window_ends_at:
        # Release first, so the rescheduled step can claim the run; the fresh updated_at
        # keeps the reaper from enqueuing duplicates while we wait.
        release(run.pk, touch=True)
        run.lease_worker = ""
        enqueue(run.pk, countdown=(iteration.bid_window_ends_at - now).total_seconds())
        return None
    with step_tx(run.pk) as tx:
        run = step.run = tx.require()
        silent = [
            Bid(
                iteration=iteration,
                agent_id=agent_id,
                decision=Bid.Decision.DECLINE,
                reason="no answer in window",
                started_at=iteration.started_at,
                received_at=now,
                late=True,
            )
            for agent_id in audience
            if agent_id not in answered
        ]
        for b in silent:
            tx.trace.add(
                run.pk,
                "bid.received",
                {"agent": b.agent_id, "decision": "decline", "reason": b.reason},
            )
        calls = select_and_claim(step, tx, iteration, bids + silent)
        writes.write_selection(run, iteration, silent, bids, calls, tx.trace)
    return calls


def select(
    spec: BlueprintSpec,
    bids: list[Bid],
    stats: dict[int, tuple[float, float]] | None = None,
    rng: random.Random | None = None,
) -> dict[int, tuple[bool, str]]:
    """Which bidders win, and why (CONCEPTS 20, 21, 65): decliners are never chosen.

    `thompson` ranks by a draw θ ~ Beta(alpha, beta) from each agent's record (stats), weighted by
    its confidence, and the reason names the draw; the others rank by confidence.
    """
    bidders = [b for b in bids if b.decision == Bid.Decision.BID]
    limit = {"all": len(bidders), "best": 1}.get(spec.selection, spec.top_k or 1)
    if spec.selection == "thompson":
        drawn = learning.thompson(bidders, stats or {}, rng or random.Random())  # noqa: S311
        ranked = [
            (bid, f"θ={theta:.3f} ~ Beta{_ab(stats, bid)} * confidence {bid.confidence:.2f}")
            for bid, theta, _ in drawn
        ]
        rule = f"thompson sampling, top {limit}"
    else:
        ordered = sorted(bidders, key=lambda b: (-(b.confidence or 0), b.received_at, b.agent_id))
        ranked = [(bid, f"by confidence {bid.confidence:.2f}") for bid in ordered]
        rule = {"all": "every bidder", "best": "the most confident"}.get(
            spec.selection, f"top {limit}"
        )
    reasons = {}
    for rank, (bid, why) in enumerate(ranked, start=1):
        won = rank <= limit
        reasons[bid.agent_id] = (
            won,
            f"{'selected' if won else 'not selected'}: rank {rank} of {len(ranked)} {why} ({rule})",
        )
    return reasons


def _ab(stats: dict[int, tuple[float, float]] | None, bid: Bid) -> str:
    alpha, beta = (stats or {}).get(bid.agent_id, (1.0, 1.0))
    return f"({alpha:g}, {beta:g})"


def stats_for(task_type: str, bids: list[Bid]) -> dict[int, tuple[float, float]]:
    """The bidders' posteriors for this task type (a uniform prior when unknown)."""
    rows = AgentStat.objects.filter(
        task_type=task_type, agent_id__in=[b.agent_id for b in bids]
    ).values_list("agent_id", "alpha", "beta")
    return {agent_id: (alpha, beta) for agent_id, alpha, beta in rows}


def select_and_claim(
    step: Step, tx: Tx, iteration: Iteration, bids: list[Bid]
) -> list[Contribution]:
    """In the transaction holding the run: select, then claim the winners' calls, each with
    its estimated cost reserved from the budget (CONCEPTS 69), so an in-process agent works
    right after commit; a remote agent's call waits for its adapter to take it. Below the
    quorum the iteration closes and the policy decides: broadcast again, or fail."""
    run, spec = tx.run, step.spec
    assert spec is not None
    stats = rng = None
    if spec.selection == "thompson":
        stats = stats_for(iteration.broadcast.get("task_type", ""), bids)
        rng = learning.rng_for(run.pk, iteration.number)
    chosen = select(spec, bids, stats, rng)
    for bid in bids:
        bid.selected, bid.selection_reason = chosen.get(bid.agent_id, (False, bid.reason))
    winners = [b for b in bids if b.selected]
    tx.trace.add(
        run.pk, "selection.made", {"selected": [b.agent_id for b in winners], "layer": "meta"}
    )
    if len(winners) < max(spec.quorum, 1):
        no_quorum(step, tx, iteration, len(winners))
        return []
    now, calls = timezone.now(), []
    for bid in winners:
        affordable = cost_reserve_locked(run, bid.est_cost)
        # An in-process call is claimed now; a remote one waits for its adapter to take it.
        claimed = Status.RUNNING if callable_here(bid.agent) else Status.PENDING
        calls.append(
            Contribution(
                agent=bid.agent,
                est_cost=bid.est_cost if affordable else 0,
                confidence=bid.confidence or 0.0,
                status=claimed if affordable else Status.FAILED,
                error_class="" if affordable else "budget",
                error="" if affordable else "the estimated cost exceeds the budget",
                started_at=now,
            )
        )
        kind = "agent.call.requested" if affordable else "agent.call.refused"
        tx.trace.add(run.pk, kind, {"agent": bid.agent_id, "layer": "retry"})
    iteration.status = Iteration.Status.EXECUTING
    return calls


def no_quorum(step: Step, tx: Tx, iteration: Iteration, selected: int) -> None:
    spec = step.spec
    assert spec is not None
    tx.trace.add(tx.run.pk, "iteration.no_quorum", {"selected": selected, "quorum": spec.quorum})
    mark_closed(
        iteration, Iteration.Outcome.NO_QUORUM, f"{selected} selected, quorum {spec.quorum}"
    )
    if spec.policy.on_insufficient_bids == "fail":
        why = f"{selected} agents bid; the quorum is {spec.quorum}"
        finish(tx.run, tx.trace, State.FAILED, Reason.INSUFFICIENT_BIDS, why)
    else:
        carry_on(step, tx.run, tx.trace)
