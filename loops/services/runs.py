"""Starting runs, and the controls people use on them: pause, resume, cancel.

Entry points are `transaction.atomic(durable=True)`; helpers assume an open transaction.
Lock order (STYLE.md B.4): halt, domain, runs parent before child, the event counter last.
Runs are locked FOR NO KEY UPDATE (we never change their keys): inserting an event or an
iteration checks its foreign key with FOR KEY SHARE on the run row, which FOR UPDATE would
block, and that implicit lock, taken after the counter's, deadlocked a child's step against
its sibling's return.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from common.db import retry_deadlocks
from common.refusals import Refused
from loops.declare import BLUEPRINTS, MAX_STACK_DEPTH
from loops.models import Blueprint, Domain, EventCounter, Iteration, LoopRun
from loops.services.stack import child_returned, children_pending, stack_changed
from loops.services.steps import enqueue, withdraw_waiting_decisions
from loops.specs import BlueprintSpec
from loops.subtree import subtree_ids
from loops.trace import Trace

# The oversight leaves loops may use (STYLE.md B.2): the audit writer, and the gates
# (read-only questions about halts and breakers).
from oversight import gates
from oversight.audit import audit_record

# The realms leaf loops may use: a remote frame's call, and the status pushed back to the
# realm that asked for a run (DESIGN.md section 8).
from realms import frames

State = LoopRun.State


@transaction.atomic(durable=True)
def run_start(**fields: Any) -> LoopRun:
    """Start a main loop of a domain in a transaction of its own (the API, the pages)."""
    return run_start_in(**fields)


def run_start_in(
    *,
    domain: str,
    blueprint: str,
    input: dict[str, Any],
    actor=None,
    origin: dict[str, Any] | None = None,
    budget: float | None = None,
) -> LoopRun:
    """Start a main loop of a domain (POST /api/v1/domains/{slug}/runs), in the caller's
    transaction (another realm's call records its key in the same one); refused while a
    halt covers the domain (423).

    The domain row is locked FOR SHARE, and halt_engage locks it FOR NO KEY UPDATE before
    parking: a start and a halt of its domain take turns, so a run either exists when the
    halt parks runs, or sees the halt here (DESIGN.md H1).
    """
    # The body's own faults first (H7): an unknown name or a sub-loop is wrong whatever the
    # domain and whether or not a halt covers it.
    spec = BLUEPRINTS.get(blueprint)
    if spec is None:
        raise Refused(
            400,
            "unknown_blueprint",
            f"No domain declares a blueprint {blueprint!r}; GET /api/v1/blueprints lists them.",
        )
    # Another realm's call (origin) may start any blueprint this realm exports as a root.
    if spec.kind != "main" and origin is None:
        raise Refused(
            400,
            "not_a_main_loop",
            f"{blueprint!r} is a {spec.kind}-loop; only main loops start from the API.",
        )
    domain_row = Domain.objects.select_for_update(of=("self",)).filter(slug=domain).first()
    if domain_row is None:
        raise Refused(404, "unknown_domain", f"There is no domain {domain!r}.")
    if halt := gates.halt_for_domain(domain_row.pk):
        raise Refused(
            423,
            "halted",
            f"{halt.scope} is halted since {halt.created_at.isoformat()} ({halt.reason}); "
            "no run can start until an admin lifts the halt.",
        )
    bp = Blueprint.objects.filter(name=blueprint, domain=domain_row).first()
    if bp is None:  # a main loop of another domain: not found under this one
        raise Refused(
            404, "unknown_blueprint", f"Domain {domain!r} declares no blueprint {blueprint!r}."
        )
    run = create_run(
        spec, bp, domain_row, input=input, parent=None, actor=actor, origin=origin, budget=budget
    )
    after = {"state": run.state, "blueprint": blueprint, "domain": domain, "origin": origin}
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
    trace: Trace | None = None,
    origin: dict[str, Any] | None = None,
) -> LoopRun:
    """Create a run in `running` and enqueue its first step after commit (inside a
    transaction: run_start's, or the engine's when a parent spawns, whose `trace` the
    child's first event joins: they share the root)."""
    now = timezone.now()
    exits = spec.policy.exits
    deadline = now + timedelta(seconds=exits.deadline_s) if exits.deadline_s else None
    if parent is not None and parent.deadline_at:
        deadline = min(filter(None, [deadline, parent.deadline_at]))
    run = LoopRun(
        blueprint=bp,
        domain=domain,
        parent=parent,
        root_id=parent.root_id if parent else None,
        spawned_by=spawned_by,
        call_key=call_key or (bp.name if parent else ""),
        depth=parent.depth + 1 if parent else 0,
        input=input,
        context={"input": input},
        budget=exits.budget if budget is None else budget,
        deadline_at=deadline,
        created_at=now,
        created_by=actor,
        origin=origin,
    )
    run.move_to(State.RUNNING)
    run.save(force_insert=True)
    if parent is None:
        run.root_id = run.pk
        LoopRun.objects.filter(pk=run.pk).update(root=run.pk)
        EventCounter.objects.create(root_id=run.pk)
    own = trace is None or trace.root_id != run.root_id
    started = Trace(run.root_id) if own else trace
    assert started is not None
    started.add(run.pk, "run.started", {"blueprint": spec.name, "depth": run.depth, "input": input})
    if spec.remote:
        # A remote frame: the peer runs it; this realm's engine never steps it.
        frames.frame_call(run, spec.remote, started, MAX_STACK_DEPTH)
        run.move_to(State.WAITING)
        run.save(update_fields=["state", "prior_state", "remote", "updated_at"])
    else:
        enqueue(run.pk)
    if own:
        started.write()
    stack_changed(run.domain_id)
    return run


@retry_deadlocks
@transaction.atomic(durable=True)
def run_pause(*, run_id: int, actor=None) -> LoopRun:
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    before = run.state
    run.move_to(State.PAUSED)
    run.paused_by = f"user:{actor.get_username()}" if actor else "system"
    run.save(update_fields=["state", "prior_state", "paused_by", "updated_at"])
    _trace(run, "run.paused", _by(actor))
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
    _trace(run, "run.resumed", {**_by(actor), "state": target})
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
    if prior == State.WAITING and not children_pending(run):
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
    below = subtree_ids(run.pk)[1:]
    subtree = list(
        LoopRun.objects.select_for_update(no_key=True)
        .filter(pk__in=below)
        .exclude(state__in=LoopRun.TERMINAL)
        .order_by("depth", "id")
    )
    trace = Trace(run.root_id)
    if any(State.INTERRUPTED in (node.state, node.prior_state) for node in [run, *subtree]):
        withdraw_waiting_decisions()
    for node in [run, *subtree]:
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
        trace.add(node.pk, "run.exited", {"state": "cancelled", **_by(actor)})
        if node.remote:
            frames.frame_cancel(node)
    ids = [node.pk for node in subtree]
    Iteration.objects.filter(run_id__in=[run.pk, *ids]).exclude(
        status=Iteration.Status.CLOSED
    ).update(
        status=Iteration.Status.CLOSED,
        outcome=Iteration.Outcome.ABANDONED,
        closed_at=timezone.now(),
    )
    if run.parent_id:
        child_returned(child=run, trace=trace)
    frames.origin_notify(run)  # a run another realm asked for: it hears of the cancel
    trace.write()
    audit_record(
        actor=actor,
        verb="run.cancelled",
        target=run,
        note=reason,
        before=before,
        after=_state(run),
        data={"subtree": sorted(ids)},
    )
    stack_changed(run.domain_id)
    return run


def _trace(run: LoopRun, kind: str, payload: dict[str, Any]) -> None:
    trace = Trace(run.root_id)
    trace.add(run.pk, kind, payload)
    trace.write()


def _state(run: LoopRun) -> dict[str, str]:
    return {"state": run.state, "prior_state": run.prior_state}


def _by(actor) -> dict[str, Any]:
    return {"by": actor.get_username() if actor else "system"}
