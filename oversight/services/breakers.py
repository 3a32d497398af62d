"""Circuit breakers (DESIGN.md H3, CONCEPTS 41).

Agent calls feed the breakers of their agent, blueprint and domain in the engine's
transaction (lock order: run, then breakers by id). A breaker trips when its metric passes
the threshold: it opens, raises an alert, and what it guards stops — an agent hears no more
broadcasts (oversight.gates), runs of a blueprint or domain are paused. After cooldown_s a
sweep makes it half-open, which lets exactly one trial through: one broadcast for an agent
breaker (a compare-and-set in gates), one resumed run for the others. The trial's first
call closes it, or opens it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from common.db import retry_deadlocks
from common.push import BREAKERS_GROUP, overview_push, push_on_commit
from common.refusals import Refused
from loops import services as loop_services
from loops.declare import BREAKERS
from loops.models import Agent, Blueprint, Domain, LoopRun
from loops.trace import events_write_many
from oversight import fragments, selectors
from oversight.audit import audit_record
from oversight.models import Alert, CircuitBreaker
from oversight.services.alerts import alert_raise

State = CircuitBreaker.State
Metric = CircuitBreaker.Metric
MAX_SAMPLES = 1000  # a window of calls kept on the row; older ones fall out first


@dataclass(frozen=True)
class Call:
    """What a breaker learns from one finished agent call."""

    agent_id: int
    ok: bool
    cost: float = 0.0
    latency_ms: float = 0.0
    metrics: dict[str, float] | None = None


def breakers_record_calls(run: LoopRun, calls: Iterable[Call], now: datetime | None = None) -> None:
    """Inside the transaction holding the run: feed each call to the breakers in scope."""
    calls = list(calls)
    if not calls:
        return
    now = now or timezone.now()
    agents = {c.agent_id for c in calls}
    breakers = list(
        CircuitBreaker.objects.select_for_update()
        .filter(
            Q(scope=CircuitBreaker.Scope.AGENT, agent_id__in=agents)
            | Q(scope=CircuitBreaker.Scope.BLUEPRINT, blueprint_id=run.blueprint_id)
            | Q(scope=CircuitBreaker.Scope.DOMAIN, domain_id=run.domain_id)
        )
        .order_by("pk")
    )
    for breaker in breakers:
        for call in calls:
            if breaker.scope != CircuitBreaker.Scope.AGENT or breaker.agent_id == call.agent_id:
                breaker_record(breaker, call, now=now, run=run)


def breaker_record(
    breaker: CircuitBreaker, call: Call, *, now: datetime, run: LoopRun | None = None
) -> None:
    """One call against a locked breaker: count it, and trip, close or reopen it."""
    if breaker.state == State.OPEN:
        return  # a call that started before it opened says nothing new
    if breaker.state == State.HALF_OPEN:
        if run is not None and run.pk != breaker.trial_run_id:
            return  # not the trial: a call another run had in flight when it opened
        if why := _trial_failed(breaker, call):
            _open(breaker, now, why, run=run)
        else:
            _close(breaker, now, "the trial call succeeded", actor=None, paused=None)
        return
    value = (call.metrics or {}).get(breaker.value_key) if breaker.value_key else None
    since = now.timestamp() - breaker.window_s
    samples = [s for s in breaker.samples if s[0] >= since][-(MAX_SAMPLES - 1) :]
    samples.append([now.timestamp(), call.ok, call.cost, call.latency_ms, value])
    breaker.samples = samples
    breaker.failures = 0 if call.ok else breaker.failures + 1
    breaker.updated_at = now
    if why := tripped(breaker, value):
        _open(breaker, now, why, run=run)
    else:
        breaker.save(update_fields=["samples", "failures", "updated_at"])


def tripped(breaker: CircuitBreaker, value: float | None) -> str:
    """Why the breaker must open now, or "" if it must not."""
    samples, limit = breaker.samples, breaker.threshold
    n = len(samples)
    if breaker.metric == Metric.CONSECUTIVE_FAILURES and breaker.failures >= limit:
        return f"{breaker.failures} consecutive failed calls (threshold {limit:g})"
    if breaker.metric == Metric.ERROR_RATE and n >= breaker.min_calls:
        rate = sum(1 for s in samples if not s[1]) / n
        if rate >= limit:
            return f"{rate:.0%} of {n} calls failed in {breaker.window_s} s (threshold {limit:.0%})"
    if breaker.metric == Metric.COST_WINDOW:
        cost = sum(s[2] for s in samples)
        if cost > limit:
            return f"calls cost {cost:g} in {breaker.window_s} s (limit {limit:g})"
    if breaker.metric == Metric.LATENCY and n >= breaker.min_calls:
        mean = sum(s[3] for s in samples) / n
        if mean > limit:
            return f"mean latency {mean:.0f} ms over {n} calls (limit {limit:g} ms)"
    if breaker.metric == Metric.REPORTED_VALUE and value is not None and value > limit:
        return f"an agent reported {breaker.value_key} = {value:g} (limit {limit:g})"
    return ""


def _trial_failed(breaker: CircuitBreaker, call: Call) -> str:
    """Why the one trial call does not close the breaker: it failed, or on its own it is
    over the limit the breaker watches (a hot reading, a slow or costly call)."""
    limit = breaker.threshold
    value = (call.metrics or {}).get(breaker.value_key) if breaker.value_key else None
    if not call.ok:
        return "the trial call failed"
    if breaker.metric == Metric.REPORTED_VALUE and value is not None and value > limit:
        return f"the trial reported {breaker.value_key} = {value:g} (limit {limit:g})"
    if breaker.metric == Metric.LATENCY and call.latency_ms > limit:
        return f"the trial call took {call.latency_ms:.0f} ms (limit {limit:g} ms)"
    if breaker.metric == Metric.COST_WINDOW and call.cost > limit:
        return f"the trial call cost {call.cost:g} (limit {limit:g})"
    return ""


def _open(
    breaker: CircuitBreaker, now: datetime, why: str, *, run=None, actor=None, forced=False
) -> None:
    before = _snapshot(breaker)
    breaker.move_to(State.OPEN, now=now, reason=why, forced=forced)
    breaker.save()
    audit_record(
        actor=actor,
        verb="breaker.forced_open" if forced else "breaker.opened",
        target=breaker,
        note=why,
        before=before,
        after=_snapshot(breaker),
        data={"run": run.pk} if run is not None else {},
    )
    alert_raise(
        kind="breaker.opened",
        level=Alert.Level.CRITICAL,
        title=f"Breaker {breaker.name} opened",
        body=f"{breaker.guards} is stopped: {why}.",
        target=breaker,
        data={"breaker": breaker.name, "guards": breaker.guards},
    )
    if breaker.scope not in (CircuitBreaker.Scope.AGENT, CircuitBreaker.Scope.PEER):
        _send_on_commit("oversight.tasks.breaker_pause_guarded", breaker.pk)
    push_on_commit(BREAKERS_GROUP, lambda: _row(breaker.pk))
    overview_push()  # open breakers


def _close(
    breaker: CircuitBreaker,
    now: datetime,
    why: str,
    *,
    actor,
    paused: list[LoopRun] | None,
    note: str = "",
) -> None:
    """Close it and resume what it paused: here the runs the caller locked first (`paused`,
    the lock order), or with None in a task after commit (the engine holds only its run)."""
    before = _snapshot(breaker)
    breaker.move_to(State.CLOSED, now=now, reason=why)
    breaker.save()
    verb = "breaker.reset" if actor is not None else "breaker.closed"
    audit_record(
        actor=actor,
        verb=verb,
        target=breaker,
        note=note or why,
        before=before,
        after=_snapshot(breaker),
    )
    if paused is not None:
        _resume_guarded(breaker, paused)
    else:
        _send_on_commit("oversight.tasks.breaker_resume_guarded", breaker.pk)
    push_on_commit(BREAKERS_GROUP, lambda: _row(breaker.pk))
    overview_push()  # open breakers


def _send_on_commit(task: str, breaker_id: int) -> None:
    """Send a task by name after commit (services import no tasks module)."""
    transaction.on_commit(lambda: current_app.send_task(task, (breaker_id,)), robust=True)


def _snapshot(breaker: CircuitBreaker) -> dict:
    return {"state": breaker.state, "forced": breaker.forced, "failures": breaker.failures}


@retry_deadlocks
@transaction.atomic(durable=True)
def breaker_pause_guarded(*, breaker_id: int) -> int:
    """After a blueprint or domain breaker opened: pause its running and waiting runs,
    remembering who paused them (the engine's gate already keeps them from stepping)."""
    breaker = CircuitBreaker.objects.get(pk=breaker_id)
    if breaker.state == State.CLOSED:
        return 0
    runs = list(
        _guarded(breaker)
        .filter(state__in=[LoopRun.State.RUNNING, LoopRun.State.WAITING])
        .exclude(pk=breaker.trial_run_id or 0)
        .select_for_update(no_key=True)
        .order_by("pk")
    )
    for run in runs:
        run.move_to(LoopRun.State.PAUSED)
        run.paused_by = f"breaker:{breaker.pk}"
        run.save(update_fields=["state", "prior_state", "paused_by", "updated_at"])
    events_write_many(
        [(r.root_id, r.pk, "run.paused", {"by": f"breaker {breaker.name}"}) for r in runs]
    )
    return len(runs)


def _guarded(breaker: CircuitBreaker):
    if breaker.scope == CircuitBreaker.Scope.PEER:
        return LoopRun.objects.none()  # it holds the outbox to the peer, no run
    if breaker.scope == CircuitBreaker.Scope.BLUEPRINT:
        return LoopRun.objects.filter(blueprint=breaker.blueprint)
    return LoopRun.objects.filter(domain=breaker.domain)


def _lock_paused(breaker_id: int) -> list[LoopRun]:
    runs = LoopRun.objects.filter(state=LoopRun.State.PAUSED, paused_by=f"breaker:{breaker_id}")
    return list(runs.select_for_update(no_key=True).order_by("pk"))


@retry_deadlocks
@transaction.atomic(durable=True)
def breaker_resume_guarded(*, breaker_id: int) -> int:
    """After the breaker closed on a successful trial: resume the runs it paused."""
    paused = _lock_paused(breaker_id)
    breaker = CircuitBreaker.objects.get(pk=breaker_id)
    if breaker.state != State.CLOSED:
        return 0  # it opened again meanwhile: they stay paused
    return len(_resume_guarded(breaker, paused))


def _resume_guarded(breaker: CircuitBreaker, runs: list[LoopRun]) -> list[LoopRun]:
    """Inside the caller's transaction, which locked them (_lock_paused): resume the runs
    this breaker paused; the running ones step again after commit."""
    for run in runs:
        run.move_to(loop_services.resume_target(run, run.prior_state))
        run.save(update_fields=["state", "prior_state", "paused_by", "started_at", "updated_at"])
        if run.state == LoopRun.State.RUNNING:
            loop_services.enqueue(run.pk, urgent=True)
    events_write_many(
        [
            (r.root_id, r.pk, "run.resumed", {"by": f"breaker {breaker.name}", "state": r.state})
            for r in runs
        ]
    )
    return runs


def breakers_half_open_due(now: datetime | None = None) -> int:
    """The beat sweep: open breakers past their cooldown go half-open; a half-open one whose
    trial never reported (its worker died) gives it out again after another cooldown."""
    now = now or timezone.now()
    due = CircuitBreaker.objects.filter(
        Q(state=State.OPEN, forced=False, retry_at__lte=now) | Q(state=State.HALF_OPEN)
    )
    return sum(_half_open(breaker_id=pk, now=now) for pk in list(due.values_list("pk", flat=True)))


@retry_deadlocks
@transaction.atomic(durable=True)
def _half_open(*, breaker_id: int, now: datetime) -> int:
    # Runs before breakers (the lock order): the trial run is picked and locked first.
    trial = (
        LoopRun.objects.filter(state=LoopRun.State.PAUSED, paused_by=f"breaker:{breaker_id}")
        .select_for_update(no_key=True)
        .order_by("pk")
        .first()
    )
    breaker = CircuitBreaker.objects.select_for_update().get(pk=breaker_id)
    cooldown = timedelta(seconds=breaker.cooldown_s)
    due = (
        breaker.state == State.OPEN
        and not breaker.forced
        and breaker.retry_at is not None
        and breaker.retry_at <= now
    )
    half = breaker.state == State.HALF_OPEN
    stale = half and breaker.trial_at is not None and breaker.trial_at <= now - cooldown
    # A blueprint or domain breaker whose trial run has not been chosen yet.
    untried = half and breaker.trial_run_id is None and trial is not None
    if not (due or stale or untried):
        return 0
    before = _snapshot(breaker)
    breaker.move_to(State.HALF_OPEN, now=now)
    if trial is not None and breaker.scope != CircuitBreaker.Scope.AGENT:
        breaker.trial_at, breaker.trial_run = now, trial
        trial.move_to(loop_services.resume_target(trial, trial.prior_state))
        trial.save(update_fields=["state", "prior_state", "paused_by", "started_at", "updated_at"])
        if trial.state == LoopRun.State.RUNNING:
            loop_services.enqueue(trial.pk, urgent=True)
    breaker.save()
    if due or stale:
        audit_record(
            actor=None,
            verb="breaker.half_opened",
            target=breaker,
            note="the last trial never reported" if stale else "cooldown passed",
            before=before,
            after=_snapshot(breaker),
            data={"trial_run": trial.pk if trial else None},
        )
    push_on_commit(BREAKERS_GROUP, lambda: _row(breaker.pk))
    overview_push()  # open breakers
    return 1


@retry_deadlocks
@transaction.atomic(durable=True)
def breaker_reset(*, breaker_id: int, actor, reason: str) -> CircuitBreaker:
    """An operator closes the breaker (with a reason); what it paused goes on."""
    if not reason.strip():
        raise Refused(400, "reason_required", "A reset needs a reason.")
    paused = _lock_paused(breaker_id)  # runs before breakers: the lock order
    breaker = CircuitBreaker.objects.select_for_update().get(pk=breaker_id)
    if breaker.state == State.CLOSED:
        raise Refused(409, "wrong_state", f"Breaker {breaker.name} is already closed.")
    _close(breaker, timezone.now(), "reset by an operator", actor=actor, paused=paused, note=reason)
    return breaker


@retry_deadlocks
@transaction.atomic(durable=True)
def breaker_force_open(*, breaker_id: int, actor, reason: str) -> CircuitBreaker:
    """The manual kill switch: open until an operator resets it, with no half-open."""
    if not reason.strip():
        raise Refused(400, "reason_required", "Forcing a breaker open needs a reason.")
    breaker = CircuitBreaker.objects.select_for_update().get(pk=breaker_id)
    if breaker.state == State.OPEN and breaker.forced:
        raise Refused(409, "wrong_state", f"Breaker {breaker.name} is already forced open.")
    _open(breaker, timezone.now(), reason, actor=actor, forced=True)
    return breaker


@transaction.atomic
def breakers_sync() -> None:
    """Mirror the declared breakers (loops.declare.breaker) into the database; their state
    is kept across restarts, only the settings follow the declaration."""
    for spec in BREAKERS.values():
        kind, _, name = spec.scope.partition(":")
        target: dict[str, Any] = {"agent": None, "blueprint": None, "domain": None}
        if kind == "agent":
            domain, _, agent = name.partition("/")
            target["agent"] = Agent.objects.get(domain__slug=domain, name=agent)
        elif kind == "blueprint":
            target["blueprint"] = Blueprint.objects.get(name=name)
        else:
            target["domain"] = Domain.objects.get(slug=name)
        CircuitBreaker.objects.update_or_create(
            name=spec.name,
            defaults={
                "scope": kind,
                **target,
                "metric": spec.metric,
                "threshold": spec.threshold,
                "window_s": spec.window_s,
                "min_calls": spec.min_calls,
                "value_key": spec.value_key,
                "cooldown_s": spec.cooldown_s,
            },
        )


def _row(breaker_id: int) -> str:
    return fragments.breaker_row(selectors.breaker_get_for_row(breaker_id))
