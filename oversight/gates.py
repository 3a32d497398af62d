"""The one question the engine asks before each step and each agent call: may this run
proceed? Answered from the database, so every worker gets the same answer (DESIGN.md H1, H3).

The engine asks under the run's row lock in every transaction. A halt or an open breaker
normally parks the runs it covers itself (halted, or paused); this check also stops the
few that raced it (a run started or spawned while the halt committed), and the engine then
parks them (loops.engine.park_if_stopped). Whoever reopens a gate re-enqueues the run.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection
from django.db.models import Q
from django.utils import timezone

from loops.models import LoopRun
from oversight.models import CircuitBreaker, Halt

# One round trip for both tables: the engine asks three times per iteration. A run-scoped
# halt covers the run's subtree; halt_engage parks that subtree itself, so checking the
# run, its parent and its root here covers what can race it. A half-open breaker lets its
# trial run through and no other; before one is chosen it stops them all (they are parked,
# and the sweep picks one of them as the trial).
_STOP = """
SELECT
    (SELECT id FROM oversight_halt
     WHERE lifted_at IS NULL
       AND (kind = 'global' OR domain_id = %(domain)s OR run_id = ANY(%(lineage)s))
     ORDER BY id LIMIT 1),
    (SELECT id FROM oversight_circuitbreaker
     WHERE state <> 'closed'
       AND (blueprint_id = %(blueprint)s OR (scope = 'domain' AND domain_id = %(domain)s))
       AND NOT (state = 'half_open' AND COALESCE(trial_run_id = %(run)s, false))
     ORDER BY id LIMIT 1)
"""


def stop_reason(run: LoopRun) -> tuple[str, int] | None:
    """("halt", id) or ("breaker", id) when something stops this run; None if nothing does."""
    lineage = [pk for pk in (run.pk, run.parent_id, run.root_id) if pk is not None]
    with connection.cursor() as cursor:
        cursor.execute(
            _STOP,
            {
                "domain": run.domain_id,
                "lineage": lineage,
                "blueprint": run.blueprint_id,
                "run": run.pk,
            },
        )
        halt_id, breaker_id = cursor.fetchone()
    if halt_id is not None:
        return ("halt", halt_id)
    if breaker_id is not None:
        return ("breaker", breaker_id)
    return None


def may_proceed(run: LoopRun) -> bool:
    """Running, and neither halted nor held by an open breaker."""
    return run.state == LoopRun.State.RUNNING and stop_reason(run) is None


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
