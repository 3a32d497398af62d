"""Pausing and resuming a whole domain (the domain page's controls), and agents' liveness."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from common.db import retry_deadlocks
from loops.models import Agent, Domain, LoopRun
from loops.services.runs import resume_target
from loops.services.stack import stack_changed
from loops.services.steps import enqueue
from loops.trace import events_write_many
from oversight.audit import audit_record

State = LoopRun.State
# What a domain pause stops: every live run that is neither paused nor halted already.
DOMAIN_PAUSABLE = [State.PENDING, State.RUNNING, State.WAITING, State.INTERRUPTED]


def domain_paused_by(domain: Domain) -> str:
    """The paused_by mark of a domain pause, so that its resume finds exactly those runs
    (not runs an operator paused one by one, nor a breaker's)."""
    return f"domain:{domain.slug}"


def runs_pause_marked(live: Callable[[], QuerySet[LoopRun]], mark: str) -> list[LoopRun]:
    """In the caller's transaction: pause the live runs `live()` finds, marked `mark` so
    that runs_resume_marked finds exactly them (a domain pause, a partition's). Locked in id
    order (a parent before its children, as halts and breakers lock them), pass after pass
    until a pass finds none: a child a step spawned just before the lock is caught next."""
    paused: list[LoopRun] = []
    while batch := list(
        live().filter(state__in=DOMAIN_PAUSABLE).select_for_update(no_key=True).order_by("pk")
    ):
        for run in batch:
            run.move_to(State.PAUSED)
            run.paused_by = mark
        LoopRun.objects.bulk_update(
            batch, ["state", "prior_state", "paused_by", "updated_at"], batch_size=500
        )
        paused += batch
    return paused


def runs_resume_marked(mark: str) -> list[LoopRun]:
    """In the caller's transaction: the runs paused with `mark` go back to what they were
    doing; the running ones step again after commit. A halt over the pause keeps its own."""
    runs = list(
        LoopRun.objects.filter(state=State.PAUSED, paused_by=mark)
        .select_for_update(no_key=True)
        .order_by("pk")
    )
    for run in runs:
        run.move_to(resume_target(run, run.prior_state))
        run.save(update_fields=["state", "prior_state", "paused_by", "started_at", "updated_at"])
        if run.state == State.RUNNING:
            enqueue(run.pk, urgent=True)
    return runs


@retry_deadlocks
@transaction.atomic(durable=True)
def domain_pause(*, domain_id: int, actor, reason: str = "") -> list[LoopRun]:
    """Pause every live run of a domain; returns the runs it paused.

    1. Lock the domain row (the lock order: halt, domain, runs), as halt_engage does: a
       domain pause, its resume and a halt of the domain take turns.
    2. Lock the live runs in id order (a parent before its children, and the order
       halts and breakers lock them in) and pause them, pass after pass until a pass finds
       none: a child that a step spawned just before the lock is caught by the next pass.
    3. One run.paused event per run, one audit event for the domain naming the count.
    """
    domain = Domain.objects.select_for_update(no_key=True).get(pk=domain_id)
    mark = domain_paused_by(domain)
    paused = runs_pause_marked(lambda: LoopRun.objects.filter(domain_id=domain.pk), mark)
    by = {"by": f"domain pause of {domain.slug} ({_name(actor)})"}
    events_write_many([(r.root_id, r.pk, "run.paused", by) for r in paused])
    audit_record(
        actor=actor,
        verb="domain.paused",
        target=domain,
        note=reason,
        after={"paused_by": mark},
        data={"domain": domain.slug, "runs": len(paused), "run_ids": [r.pk for r in paused]},
    )
    stack_changed(domain.pk)
    return paused


@retry_deadlocks
@transaction.atomic(durable=True)
def domain_resume(*, domain_id: int, actor, reason: str = "") -> list[LoopRun]:
    """Resume the runs a domain pause paused (paused_by "domain:<slug>"), each to what it
    was doing; the running ones step again after commit. Runs paused one by one or by a
    breaker stay paused; halted ones (a halt over the pause) wait for the lift, which
    gives them back to this pause."""
    domain = Domain.objects.select_for_update(no_key=True).get(pk=domain_id)
    mark = domain_paused_by(domain)
    runs = runs_resume_marked(mark)
    by = f"domain resume of {domain.slug} ({_name(actor)})"
    events_write_many(
        [(r.root_id, r.pk, "run.resumed", {"by": by, "state": r.state}) for r in runs]
    )
    audit_record(
        actor=actor,
        verb="domain.resumed",
        target=domain,
        note=reason,
        before={"paused_by": mark},
        data={"domain": domain.slug, "runs": len(runs), "run_ids": [r.pk for r in runs]},
    )
    stack_changed(domain.pk)
    return runs


@transaction.atomic(durable=True)
def agent_heartbeat(*, agent_id: int) -> Agent:
    """Record that an agent is alive (POST /api/v1/agents/{id}/heartbeat). A quarantined
    agent stays quarantined: a heartbeat proves it answers, not that it answers well, and
    only an operator lifts a quarantine."""
    agent = Agent.objects.select_for_update().get(pk=agent_id)
    agent.heartbeat_at = timezone.now()
    if agent.status == Agent.Status.OFFLINE:
        agent.status = Agent.Status.ONLINE
    agent.save(update_fields=["heartbeat_at", "status"])
    return agent


def _name(actor) -> str:
    return actor.get_username() if actor else "system"
