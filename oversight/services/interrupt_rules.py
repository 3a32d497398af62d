"""What every decision path of an interrupt shares (oversight.services.interrupts, .copies,
.deadlines): where in the stacks it stands, whether a decision is well formed, how a loser's
409 names the winner (person, realm, time), and its inbox update as pushed."""

from __future__ import annotations

import math
from typing import Any

import jsonschema

from common.refusals import Refused
from loops.models import Iteration, LoopRun
from loops.services.cost import EPSILON, cost_parent_room
from oversight import fragments, selectors
from oversight.models import Alert, Interrupt
from oversight.services import quorum
from realms.decisions import settled_view

PAST = {"approve": "approved", "reject": "rejected", "modify": "modified"}
LEVEL = {
    "info": Alert.Level.INFO,
    "warning": Alert.Level.WARNING,
    "critical": Alert.Level.CRITICAL,
}


def stack_address(run: LoopRun, iteration: Iteration | None) -> dict[str, Any]:
    """domain / main / sub / micro (each {run, blueprint}) and the iteration."""
    address: dict[str, Any] = {"domain": run.domain.slug}
    node: LoopRun | None = run
    while node is not None:  # at most MAX_STACK_DEPTH frames
        address.setdefault(node.blueprint.kind, {"run": node.pk, "blueprint": node.blueprint.name})
        node = node.parent
    address["iteration"] = iteration.number if iteration else run.iteration
    return address


def already_decided(interrupt: Interrupt) -> str:
    if interrupt.status == Interrupt.Status.WITHDRAWN:
        return (
            f"Interrupt {interrupt.pk} was withdrawn at {_iso(interrupt.decided_at)}: "
            f"{interrupt.comment}"
        )
    if interrupt.status == Interrupt.Status.EXPIRED:
        return (
            f"Interrupt {interrupt.pk} expired at {_iso(interrupt.decided_at)}; "
            f"its default ({interrupt.decision}) was applied."
        )
    view = settled_view(interrupt)
    return (
        f"Interrupt {interrupt.pk} was already decided by {view['by']} in realm "
        f"{view['realm']} at {_iso(interrupt.decided_at)} ({interrupt.decision})."
        + quorum.approvers_named(interrupt)
    )


def check_decision(interrupt: Interrupt, decision: str, payload: Any, comment: str) -> None:
    if decision not in Interrupt.Decision.values:
        raise Refused(
            400,
            "invalid_decision",
            f"{decision!r} is not a decision; use approve, reject or modify.",
        )
    if decision == Interrupt.Decision.REJECT and not comment.strip():
        raise Refused(
            400, "reason_required", "A rejection needs a comment saying why; the loop is told."
        )
    if decision != Interrupt.Decision.MODIFY:
        check_extension(interrupt, decision, payload)
        return
    if payload is None:
        raise Refused(400, "payload_required", "A modification needs a payload.")
    if interrupt.proposal_schema:
        problems = [
            f"{'/'.join(map(str, e.absolute_path)) or 'payload'}: {e.message}"
            for e in jsonschema.Draft202012Validator(interrupt.proposal_schema).iter_errors(payload)
        ]
        if problems:
            raise Refused(
                400,
                "invalid_payload",
                "The payload does not match the proposal's schema: " + "; ".join(problems),
            )
    check_extension(interrupt, decision, payload)


def check_extension(interrupt: Interrupt, decision: str, payload: Any) -> None:
    """A budget question (loops.engine.budget, issue 18): the extension approved or
    modified must fit what the run's parent has left now, which may be less than when it
    was asked (the schema's maximum). The run's next step checks again, under the parent's
    lock, when it sets the extension aside."""
    limit = interrupt.limit
    budget_question = isinstance(limit, dict) and limit.get("kind") == "budget"
    # A copy of a peer's question is checked where it was asked: the peer's parent's.
    if decision == Interrupt.Decision.REJECT or not budget_question or interrupt.remote:
        return
    chosen = payload if decision == Interrupt.Decision.MODIFY else interrupt.proposal
    amount = chosen.get("extend_by") if isinstance(chosen, dict) else None
    if not isinstance(amount, int | float):
        return  # the schema said what is wrong with a modification
    if not math.isfinite(amount):  # JSON's Infinity, which no maximum bounds at the root
        raise Refused(400, "invalid_payload", "extend_by must be a finite number.")
    room = cost_parent_room(interrupt.run)
    if room is None or amount <= room + EPSILON:
        return
    raise Refused(
        400,
        "over_remainder",
        f"An extension of {amount:g} is more than parent run {interrupt.run.parent_id} has "
        f"left now ({room:g}): modify it to at most {room:g}, or reject.",
    )


def where(address: dict[str, Any]) -> str:
    frames = [address[k]["blueprint"] for k in ("main", "sub", "micro") if k in address]
    return (
        f"{address.get('domain', '?')} / {' / '.join(frames)}, iteration {address.get('iteration')}"
    )


def _iso(moment) -> str:
    return moment.isoformat() if moment is not None else "an unknown time"


def interrupt_update_html(interrupt_id: int) -> str:
    """The inbox's update of an interrupt as pushed after a commit: read, then rendered."""
    return fragments.interrupt_update(selectors.interrupt_get_with_history(interrupt_id))
