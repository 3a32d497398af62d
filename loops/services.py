"""Writes on loop runs that people and the API ask for, and the helpers the engine shares:
the event trace, cost reservations and the return of a child to its parent.

Entry points are `transaction.atomic(durable=True)`; helpers assume an open transaction.
Lock order (STYLE.md B.4): halt, domain, runs parent before child, the event counter last.
Runs are locked FOR NO KEY UPDATE (we never change their keys): inserting an event or an
iteration checks its foreign key with FOR KEY SHARE on the run row, which FOR UPDATE would
block, and that implicit lock, taken after the counter's, deadlocked a child's step against
its sibling's return.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from loops.declare import BLUEPRINTS, BlueprintSpec
from loops.models import Blueprint, Domain, EventCounter, Iteration, LoopRun

# The two oversight leaves loops may use (STYLE.md B.2): the audit writer, and the gates
# (read-only questions about halts and breakers).
from oversight import gates
from oversight.audit import audit_record

State = LoopRun.State


class StartRejected(ValueError):
    """A run cannot start; code and message say why (the API maps them to 4xx)."""

    def __init__(self, code: str, detail: str) -> None:
        self.code, self.detail = code, detail
        super().__init__(detail)


def retry_deadlocks(service):
    """Run a durable service again (twice at most) when PostgreSQL chose its transaction as
    a deadlock victim: it rolled back whole, so running it again is safe. Needed because a
    child's return locks child then parent, while a cancel locks parent then children."""

    @functools.wraps(service)
    def wrapper(*args, **kwargs):
        for attempt in range(3):
            try:
                return service(*args, **kwargs)
            except OperationalError as exc:
                if not is_deadlock(exc) or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    return wrapper


def is_deadlock(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == "40P01"


# --- The event trace ----------------------------------------------------------------------


# One statement: take n seqs from the root's counter and insert the events with them. The
# engine writes a trace batch twice per iteration, and this replaced an UPDATE plus an ORM
# bulk_create whose Python cost dominated (docs/BENCHMARKS.md). The timestamp is read by
# the database once the counter is locked, not by Python before: two writers racing for
# the counter would otherwise stamp seqs out of order.
_TRACE_INSERT = """
WITH counter AS (
    UPDATE loops_eventcounter SET last_seq = last_seq + %(n)s
    WHERE root_id = %(root)s RETURNING last_seq
)
INSERT INTO loops_event (root_id, run_id, seq, type, payload, ts)
SELECT %(root)s, e.run_id, counter.last_seq - %(n)s + e.ord, e.type, e.payload,
       clock_timestamp()
FROM counter,
     unnest(%(runs)s::bigint[], %(types)s::text[], %(payloads)s::jsonb[])
         WITH ORDINALITY AS e(run_id, type, payload, ord)
"""


def events_write(root_id: int | None, events: Iterable[tuple[int, str, dict[str, Any]]]) -> None:
    """Append (run_id, type, payload) events to a root's trace with gapless seqs.

    Inside the caller's transaction: the counter row stays locked until commit, so two
    workers writing to one trace take turns and a rollback gives its numbers back.
    """
    # In autocommit the counter would commit alone, and a crash before the insert would
    # leave a gap in the trace.
    assert transaction.get_connection().in_atomic_block, "events_write needs a transaction"
    if root_id is None:  # every run has its root from the transaction that creates it
        raise ValueError("events_write needs the root run's id")
    events = list(events)
    if not events:
        return
    encoder = DjangoJSONEncoder()
    with connection.cursor() as cursor:
        cursor.execute(
            _TRACE_INSERT,
            {
                "n": len(events),
                "root": root_id,
                "runs": [run_id for run_id, _, _ in events],
                "types": [kind for _, kind, _ in events],
                "payloads": [encoder.encode(payload) for _, _, payload in events],
            },
        )
        if cursor.rowcount != len(events):
            raise RuntimeError(f"run {root_id} has no event counter; is it a root?")


# The same for events of many traces at once (a halt parks a thousand runs): each root's
# counter moves once, in root order, so two such writers cannot deadlock on counters.
_TRACES_INSERT = """
WITH batch AS (
    SELECT e.root_id, e.run_id, e.type, e.payload,
           row_number() OVER (PARTITION BY e.root_id ORDER BY e.ord) AS ord,
           count(*) OVER (PARTITION BY e.root_id) AS n
    FROM unnest(%(roots)s::bigint[], %(runs)s::bigint[], %(types)s::text[], %(payloads)s::jsonb[])
         WITH ORDINALITY AS e(root_id, run_id, type, payload, ord)
),
counter AS (
    UPDATE loops_eventcounter c SET last_seq = c.last_seq + t.n
    FROM (SELECT root_id, max(n) AS n FROM batch GROUP BY root_id ORDER BY root_id) t
    WHERE c.root_id = t.root_id
    RETURNING c.root_id, c.last_seq, t.n
)
INSERT INTO loops_event (root_id, run_id, seq, type, payload, ts)
SELECT b.root_id, b.run_id, counter.last_seq - counter.n + b.ord, b.type, b.payload,
       clock_timestamp()
FROM batch b JOIN counter ON counter.root_id = b.root_id
"""


def events_write_many(events: list[tuple[int | None, int, str, dict[str, Any]]]) -> None:
    """Append (root_id, run_id, type, payload) events to several traces in one statement."""
    assert transaction.get_connection().in_atomic_block, "events_write_many needs a transaction"
    if not events:
        return
    encoder = DjangoJSONEncoder()
    with connection.cursor() as cursor:
        cursor.execute(
            _TRACES_INSERT,
            {
                "roots": [root for root, _, _, _ in events],
                "runs": [run for _, run, _, _ in events],
                "types": [kind for _, _, kind, _ in events],
                "payloads": [encoder.encode(payload) for _, _, _, payload in events],
            },
        )


# --- Starting and controlling runs --------------------------------------------------------


@transaction.atomic(durable=True)
def run_start(*, domain: str, blueprint: str, input: dict[str, Any], actor=None) -> LoopRun:
    """Start a main loop of a domain (POST /api/v1/domains/{slug}/runs); refused while a
    halt covers the domain.

    The domain row is locked FOR SHARE, and halt_engage locks it FOR NO KEY UPDATE before
    parking: a start and a halt of its domain take turns, so a run either exists when the
    halt parks runs, or sees the halt here (DESIGN.md H1).
    """
    domain_row = Domain.objects.select_for_update(of=("self",)).filter(slug=domain).first()
    if domain_row is None:
        raise StartRejected("unknown_domain", f"There is no domain {domain!r}.")
    if halt := gates.halt_for_domain(domain_row.pk):
        raise StartRejected(
            "halted",
            f"{halt.scope} is halted since {halt.created_at.isoformat()} ({halt.reason}); "
            "no run can start until an admin lifts the halt.",
        )
    bp = Blueprint.objects.filter(name=blueprint, domain=domain_row).first()
    spec = BLUEPRINTS.get(blueprint)
    if bp is None or spec is None:
        raise StartRejected(
            "unknown_blueprint", f"Domain {domain!r} declares no blueprint {blueprint!r}."
        )
    if spec.kind != "main":
        raise StartRejected(
            "not_a_main_loop",
            f"{blueprint!r} is a {spec.kind}-loop; only main loops start from the API.",
        )
    run = create_run(spec, bp, domain_row, input=input, parent=None, actor=actor)
    after = {"state": run.state, "blueprint": blueprint, "domain": domain}
    audit_record(actor=actor, verb="run.started", target=run, after=after)
    return run


def create_run(
    spec: BlueprintSpec,
    bp: Blueprint,
    domain: Domain,
    *,
    input: dict[str, Any],
    parent: LoopRun | None,
    spawned_by: Iteration | None = None,
    budget: float | None = None,
    actor=None,
    call_key: str = "",
) -> LoopRun:
    """Create a run in `running` and enqueue its first step after commit (inside a
    transaction: run_start's, or the engine's when a parent spawns)."""
    now = timezone.now()
    exits = spec.policy.exits
    deadline = now + timedelta(seconds=exits.deadline_s) if exits.deadline_s else None
    if parent is not None and parent.deadline_at:
        deadline = min(filter(None, [deadline, parent.deadline_at]))
    run = LoopRun.objects.create(
        blueprint=bp,
        domain=domain,
        parent=parent,
        root_id=parent.root_id if parent else None,
        spawned_by=spawned_by,
        call_key=call_key or (bp.name if parent else ""),
        depth=parent.depth + 1 if parent else 0,
        state=State.RUNNING,
        input=input,
        context={"input": input},
        budget=exits.budget if budget is None else budget,
        deadline_at=deadline,
        started_at=now,
        created_at=now,
        updated_at=now,
        created_by=actor,
    )
    if parent is None:
        run.root_id = run.pk
        LoopRun.objects.filter(pk=run.pk).update(root=run.pk)
        EventCounter.objects.create(root_id=run.pk)
    events_write(
        run.root_id,
        [(run.pk, "run.started", {"blueprint": spec.name, "depth": run.depth, "input": input})],
    )
    enqueue(run.pk)
    stack_changed(run.domain_id)
    return run


def stack_changed(domain_id: int) -> None:
    """The domain page's live stack chart follows frames starting and ending (coalesced)."""
    from loops.fragments import domain_stack_push

    domain_stack_push(domain_id)


URGENT_QUEUE = "urgent"


def enqueue(run_id: int, countdown: float | None = None, *, urgent: bool = False) -> None:
    """Step the run after commit. A step a person is waiting for (a decision, a resume, a
    lift) goes to the urgent queue, which workers read first, so it does not wait behind a
    thousand queued steps (DESIGN.md section 6: decision → next step)."""
    from loops.tasks import advance

    queue = URGENT_QUEUE if urgent else None
    # robust: with the broker down, the committed change (a run started, a decision, a lift)
    # must not answer as an error, or a client retrying it would make it twice; the send's
    # failure is logged and the reaper steps the run (engine.reclaim, LOOP_STALE_SECONDS).
    transaction.on_commit(
        lambda: advance.apply_async((run_id,), countdown=countdown, queue=queue), robust=True
    )


@retry_deadlocks
@transaction.atomic(durable=True)
def run_pause(*, run_id: int, actor=None) -> LoopRun:
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    before = run.state
    run.move_to(State.PAUSED)
    run.paused_by = f"user:{actor.get_username()}" if actor else "system"
    run.save(update_fields=["state", "prior_state", "paused_by", "updated_at"])
    events_write(run.root_id, [(run.pk, "run.paused", _by(actor))])
    audit_record(
        actor=actor, verb="run.paused", target=run, before={"state": before}, after=_state(run)
    )
    return run


@retry_deadlocks
@transaction.atomic(durable=True)
def run_resume(*, run_id: int, actor=None) -> LoopRun:
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    if run.state != State.PAUSED:
        run.move_to(State.RUNNING)  # raises TransitionRejected naming the state
    before = _state(run)
    target = resume_target(run, run.prior_state)
    run.move_to(target)
    run.save(update_fields=["state", "prior_state", "paused_by", "started_at", "updated_at"])
    events_write(run.root_id, [(run.pk, "run.resumed", {**_by(actor), "state": target})])
    audit_record(actor=actor, verb="run.resumed", target=run, before=before, after=_state(run))
    if target == State.RUNNING:
        enqueue(run.pk, urgent=True)
    return run


def resume_target(run: LoopRun, prior: str) -> str:
    """Where a paused or halted run goes back to: its prior state, corrected by what is
    true now. A pending interrupt keeps it interrupted even if a halt over a pause lost
    that state; a wait for children that all ended is over."""
    if run.interrupts.filter(status="pending").exists():  # oversight.Interrupt
        return State.INTERRUPTED
    if prior in ("", State.INTERRUPTED, State.PAUSED, State.HALTED):
        prior = State.RUNNING  # the interrupt was decided meanwhile
    if prior == State.WAITING and not _children_pending(run):
        return State.RUNNING
    return prior


@retry_deadlocks
@transaction.atomic(durable=True)
def run_cancel(*, run_id: int, actor=None, reason: str = "") -> LoopRun:
    """Cancel a run and its whole subtree; a cancelled child reports back to its parent."""
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    if run.is_terminal:
        run.move_to(State.CANCELLED)  # raises TransitionRejected naming the state
    before = _state(run)
    subtree = list(
        LoopRun.objects.select_for_update(no_key=True)
        .filter(root_id=run.root_id, depth__gt=run.depth)
        .exclude(state__in=LoopRun.TERMINAL)
        .order_by("depth", "id")
    )
    ids = _subtree_ids(run, subtree)
    events = []
    for node in [run, *(n for n in subtree if n.pk in ids)]:
        node.move_to(State.CANCELLED)
        node.exit_reason = LoopRun.ExitReason.CANCELLED
        node.exit_detail = reason or "Cancelled by an operator."
        node.save(
            update_fields=[
                "state",
                "prior_state",
                "exit_reason",
                "exit_detail",
                "finished_at",
                "lease_worker",
                "lease_expires_at",
                "updated_at",
            ]
        )
        events.append((node.pk, "run.exited", {"state": "cancelled", **_by(actor)}))
    Iteration.objects.filter(run_id__in=[run.pk, *ids]).exclude(
        status=Iteration.Status.CLOSED
    ).update(
        status=Iteration.Status.CLOSED,
        outcome=Iteration.Outcome.ABANDONED,
        closed_at=timezone.now(),
    )
    events_write(run.root_id, events)
    audit_record(
        actor=actor,
        verb="run.cancelled",
        target=run,
        note=reason,
        before=before,
        after=_state(run),
        data={"subtree": sorted(ids)},
    )
    if run.parent_id:
        child_returned(child=run)
    stack_changed(run.domain_id)
    return run


def _state(run: LoopRun) -> dict[str, str]:
    return {"state": run.state, "prior_state": run.prior_state}


def _subtree_ids(run: LoopRun, candidates: list[LoopRun]) -> set[int]:
    ids, frontier = set(), {run.pk}
    for node in candidates:  # ordered by depth, so parents come first
        if node.parent_id in frontier:
            ids.add(node.pk)
            frontier.add(node.pk)
    return ids


def _by(actor) -> dict[str, Any]:
    return {"by": actor.get_username() if actor else "system"}


# --- Cost (CONCEPTS 69) -------------------------------------------------------------------


def cost_reserve(run_id: int, amount: float) -> bool:
    """Atomically set aside amount of the run's budget; False if it does not fit."""
    return bool(
        LoopRun.objects.filter(pk=run_id)
        .filter(Q(budget__isnull=True) | Q(budget__gte=F("cost") + F("cost_reserved") + amount))
        .update(cost_reserved=F("cost_reserved") + amount)
    )


def cost_settle(run_id: int, *, reserved: float, actual: float, tokens: int = 0) -> None:
    LoopRun.objects.filter(pk=run_id).update(
        cost_reserved=F("cost_reserved") - reserved,
        cost=F("cost") + actual,
        tokens=F("tokens") + tokens,
    )


# --- Call-stack return (CONCEPTS 1, 19, 38) ----------------------------------------------


def _children_pending(run: LoopRun) -> bool:
    return run.children.exclude(state__in=LoopRun.TERMINAL).exists()


def child_returned(*, child: LoopRun) -> None:
    """In the transaction that ended the child: settle its budget on the parent, write its
    result into the parent's context, and wake the parent once no sibling is still running.
    """
    assert child.parent_id is not None, "only a child returns to a parent"
    parent = LoopRun.objects.select_for_update(no_key=True).get(pk=child.parent_id)
    # The child's budget was set aside from the parent's only if the parent has a budget.
    reserved = (child.budget or 0) if parent.budget is not None else 0
    LoopRun.objects.filter(pk=parent.pk).update(
        cost=F("cost") + child.cost,
        cost_reserved=F("cost_reserved") - reserved,
        tokens=F("tokens") + child.tokens,
    )
    parent.refresh_from_db(fields=["cost", "cost_reserved", "tokens"])
    children = parent.context.setdefault("children", {})
    children[child.call_key or child.blueprint.name] = {
        "run": child.pk,
        "state": child.state,
        "exit_reason": child.exit_reason,
        "result": child.result,
    }
    parent.save(update_fields=["context"])
    events = [(parent.pk, "child.completed", {"child": child.pk, "state": child.state})]
    if parent.state == State.WAITING and not _children_pending(parent):
        parent.move_to(State.RUNNING)
        parent.save(update_fields=["state", "updated_at"])
        enqueue(parent.pk)
    events_write(parent.root_id, events)


@retry_deadlocks
@transaction.atomic(durable=True)
def run_wake(*, run_id: int) -> None:
    """A waiting run none of whose children is still live goes back to running."""
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    if run.state == State.WAITING and not _children_pending(run):
        run.move_to(State.RUNNING)
        run.save(update_fields=["state", "updated_at"])
        events_write(run.root_id, [(run.pk, "run.woken", {"by": "reaper"})])
        enqueue(run.pk)


# --- Agent liveness (added for POST /api/v1/agents/{id}/heartbeat) ------------------------


@transaction.atomic(durable=True)
def agent_heartbeat(*, agent_id: int):
    """Record that an agent is alive. A quarantined agent stays quarantined: a heartbeat
    proves it answers, not that it answers well, and only an operator lifts a quarantine."""
    from loops.models import Agent  # here, to leave the module's imports to their owner

    agent = Agent.objects.select_for_update().get(pk=agent_id)
    agent.heartbeat_at = timezone.now()
    if agent.status == Agent.Status.OFFLINE:
        agent.status = Agent.Status.ONLINE
    agent.save(update_fields=["heartbeat_at", "status"])
    return agent


# --- Pausing and resuming a whole domain (the domain page's controls) ---------------------

# What a domain pause stops: every live run that is neither paused nor halted already.
DOMAIN_PAUSABLE = [State.PENDING, State.RUNNING, State.WAITING, State.INTERRUPTED]


def domain_paused_by(domain: Domain) -> str:
    """The paused_by mark of a domain pause, so that its resume finds exactly those runs
    (not runs an operator paused one by one, nor a breaker's)."""
    return f"domain:{domain.slug}"


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
    paused: list[LoopRun] = []
    while batch := list(
        LoopRun.objects.filter(domain_id=domain.pk, state__in=DOMAIN_PAUSABLE)
        .select_for_update(no_key=True)
        .order_by("pk")
    ):
        for run in batch:
            run.move_to(State.PAUSED)
            run.paused_by = mark
        LoopRun.objects.bulk_update(
            batch, ["state", "prior_state", "paused_by", "updated_at"], batch_size=500
        )
        paused += batch
    by = {"by": f"domain pause of {domain.slug} ({_by(actor)['by']})"}
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
    runs = list(
        LoopRun.objects.filter(domain_id=domain.pk, state=State.PAUSED, paused_by=mark)
        .select_for_update(no_key=True)
        .order_by("pk")
    )
    for run in runs:
        run.move_to(resume_target(run, run.prior_state))
        run.save(update_fields=["state", "prior_state", "paused_by", "started_at", "updated_at"])
        if run.state == State.RUNNING:
            enqueue(run.pk, urgent=True)
    by = f"domain resume of {domain.slug} ({_by(actor)['by']})"
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
