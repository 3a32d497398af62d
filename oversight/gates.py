"""The one question the engine asks before each step and each agent call: may this run
proceed? Answered from the database, so every worker gets the same answer (DESIGN.md H1, H3).

The engine asks under the run's row lock in every transaction. A halt or an open breaker
normally parks the runs it covers itself (halted, or paused); this check also stops the
few that raced it (a run started or spawned while the halt committed), and the engine then
parks them (loops.engine.park_if_stopped). Whoever reopens a gate re-enqueues the run.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q
from django.utils import timezone

from common.db import prepared_cursor
from loops.models import LoopRun
from oversight.models import CircuitBreaker, Halt


def stop_columns(run: str) -> str:
    """The gate as two columns over a run row aliased `run` in the caller's statement: the id
    of a halt that covers it and of a breaker that stops it (both NULL when it may go on).
    The engine asks it in the statement that claims or locks the run: one round trip.

    A run-scoped halt covers the run's subtree; halt_engage parks that subtree itself, so
    checking the run, its parent and its root here covers what can race it. A half-open
    breaker lets its trial run through and no other; before one is chosen it stops them all
    (they are parked, and the sweep picks one of them as the trial)."""
    return f"""
    (SELECT id FROM oversight_halt
     WHERE lifted_at IS NULL
       AND (kind = 'global' OR domain_id = {run}.domain_id
            OR run_id IN ({run}.id, {run}.parent_id, {run}.root_id))
     ORDER BY id LIMIT 1) AS stop_halt,
    (SELECT id FROM oversight_circuitbreaker
     WHERE state <> 'closed'
       AND (blueprint_id = {run}.blueprint_id OR (scope = 'domain' AND domain_id = {run}.domain_id))
       AND NOT (state = 'half_open' AND COALESCE(trial_run_id = {run}.id, false))
     ORDER BY id LIMIT 1) AS stop_breaker"""


Stop = tuple[str, int] | None


def stop_of(halt_id: int | None, breaker_id: int | None) -> Stop:
    """("halt", id) or ("breaker", id) from stop_columns' two values; None if nothing stops."""
    if halt_id is not None:
        return ("halt", halt_id)
    if breaker_id is not None:
        return ("breaker", breaker_id)
    return None


_STOP = f"SELECT {stop_columns('r')} FROM loops_looprun r WHERE r.id = %(run)s"


def stop_reason(run: LoopRun) -> Stop:
    """("halt", id) or ("breaker", id) when something stops this run; None if nothing does."""
    with prepared_cursor() as cursor:
        cursor.execute(_STOP, {"run": run.pk})
        row = cursor.fetchone()
    return stop_of(*row) if row else None


def halt_for_domain(domain_id: int) -> Halt | None:
    """The active halt that forbids starting a run in this domain (answered with 423)."""
    return (
        Halt.objects.filter(lifted_at__isnull=True)
        .filter(Q(kind=Halt.Kind.GLOBAL) | Q(domain_id=domain_id))
        .order_by("pk")
        .first()
    )


def agents_excluded(run: LoopRun, candidates: Iterable[int] | None = None) -> set[int]:
    """Agents of the run's domain that must not hear a broadcast: their breaker is open, or
    half-open with its one trial already given to another run (CONCEPTS 41). Only the
    candidates (the agents the broadcast would reach) can take a trial, so a broadcast the
    agent would not hear anyway cannot waste it."""
    breakers = CircuitBreaker.objects.filter(
        scope=CircuitBreaker.Scope.AGENT, agent__domain_id=run.domain_id
    ).exclude(state=CircuitBreaker.State.CLOSED)
    if candidates is not None:
        breakers = breakers.filter(agent_id__in=list(candidates))
    excluded: set[int] = set()
    for breaker in breakers.only("pk", "agent_id", "state"):
        if breaker.state == CircuitBreaker.State.HALF_OPEN and _take_trial(breaker, run):
            continue
        if breaker.agent_id is not None:
            excluded.add(breaker.agent_id)
    return excluded


def _take_trial(breaker: CircuitBreaker, run: LoopRun) -> bool:
    """Compare-and-set: exactly one broadcast gets the half-open breaker's trial."""
    return bool(
        CircuitBreaker.objects.filter(
            pk=breaker.pk, state=CircuitBreaker.State.HALF_OPEN, trial_at__isnull=True
        ).update(trial_at=timezone.now(), trial_run=run)
    )
