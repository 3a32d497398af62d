"""The call stack of loop runs (CONCEPTS 1, 19, 38): a child's return to its parent, the wake
of a parent left waiting, and the live stack pushed to the domain's page."""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from common.db import retry_deadlocks
from common.push import domain_group, overview_push, push_coalesced_on_commit
from loops import fragments, selectors
from loops.models import Domain, LoopRun
from loops.services.steps import enqueue
from loops.trace import Trace

State = LoopRun.State


def stack_changed(domain_id: int) -> None:
    """Frames started or ended: push the domain's live stack after commit, at most once a
    coalescing window per domain (common.push.COALESCE_SECONDS), and the overview, whose
    cards count the live frames (coalesced too)."""
    push_coalesced_on_commit(
        domain_group(domain_id),
        f"domain-stack:{domain_id}",
        "loops.services.stack.domain_stack_html",
        domain_id,
    )
    overview_push()


def domain_stack_html(domain_id: int) -> str:
    """The domain's live stack as pushed (named by stack_changed, so a worker can render it
    too): read after the commit, then rendered."""
    domain = Domain.objects.get(pk=domain_id)
    return fragments.domain_stack(domain, selectors.stack_frames(domain.pk))


def children_pending(run: LoopRun, *, besides: LoopRun | None = None) -> bool:
    """Whether a child of run is still live (besides one that is returning now, whose row
    its transaction writes last)."""
    live = run.children.exclude(state__in=LoopRun.TERMINAL)
    if besides is not None:
        live = live.exclude(pk=besides.pk)
    return live.exists()


def child_returned(*, child: LoopRun, trace: Trace) -> None:
    """In the transaction that ended the child: settle its budget on the parent, write its
    result into the parent's context, and wake the parent once no sibling is still running.
    Lock order: the child (the caller holds it), then its parent."""
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
    trace.add(parent.pk, "child.completed", {"child": child.pk, "state": child.state})
    if parent.state == State.WAITING and not children_pending(parent, besides=child):
        parent.move_to(State.RUNNING)
        parent.save(update_fields=["state", "updated_at"])
        enqueue(parent.pk)


@retry_deadlocks
@transaction.atomic(durable=True)
def run_wake(*, run_id: int) -> None:
    """A waiting run none of whose children is still live goes back to running."""
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    if run.state == State.WAITING and run.remote is None and not children_pending(run):
        run.move_to(State.RUNNING)
        run.save(update_fields=["state", "updated_at"])
        trace = Trace(run.root_id)
        trace.add(run.pk, "run.woken", {"by": "reaper"})
        trace.write()
        enqueue(run.pk)
