"""Copies of a peer realm's interrupts (DESIGN.md H9). An interrupt raised in work we asked a
peer for belongs to the peer: its deadline, its default and its lock, which alone says who
wins. When both realms' grants allow it, its copy waits in our inbox with the whole
cross-realm address; a person here who decides it decides in the peer, at once
(realms.decisions.decide_remote), and the copy is settled as the peer answers, or as the
peer's `loopstacks/Decided` says when someone else, or its deadline, settled it."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from common.db import retry_deadlocks
from common.push import INBOX_GROUP, overview_push, push_on_commit
from common.refusals import Refused
from loops.models import LoopRun
from oversight import fragments, selectors
from oversight.audit import audit_record
from oversight.models import Alert, Interrupt, InterruptApproval
from oversight.services.alerts import alert_raise, alerts_retire
from oversight.services.interrupt_rules import (
    LEVEL,
    PAST,
    already_decided,
    check_decision,
    interrupt_update_html,
    stack_address,
    where,
)
from realms import decisions


@retry_deadlocks
@transaction.atomic(durable=True)
def copy_raise(*, frame: LoopRun, realm: str, original: dict[str, Any]) -> Interrupt:
    """A peer raised an interrupt in the work `frame` asked it for, and its grant lets our
    operators answer (DESIGN.md H9): its copy joins our inbox, with the whole address (our
    stack down to the frame, then the peer's). The copy has no deadline of its own: the
    peer's applies there, and its outcome comes back (copy_settle). Idempotent by the
    original's id. `original` is checked by the caller (realms.services.remote_interrupts)."""
    # The frame's lock orders two deliveries of the same message (a retry after a lost
    # answer): the second finds the first's copy.
    LoopRun.objects.select_for_update(no_key=True).filter(pk=frame.pk).first()
    found = Interrupt.objects.filter(remote__realm=realm, remote__id=original["id"]).first()
    if found is not None:
        return found
    address = stack_address(frame, None) | {"remote": {"realm": realm, **original["address"]}}
    interrupt = Interrupt.objects.create(
        run=frame,
        source=original["source"],
        address=address,
        reason=original["reason"],
        rationale=original["rationale"],
        proposal=original["proposal"],
        proposal_schema=original["proposal_schema"],
        limit=original["limit"],
        severity=original["severity"],
        deadline_at=original["deadline"],
        default_action=original["default"],
        approvals_needed=original.get("approvals_needed", 1),
        remote={"realm": realm, "id": original["id"], "url": original["url"]},
    )
    push_on_commit(
        INBOX_GROUP,
        lambda: fragments.interrupt_raised(selectors.interrupt_with_run_history(interrupt)),
    )
    overview_push()
    audit_record(
        actor=None,
        verb="interrupt.raised",
        target=interrupt,
        note=interrupt.reason,
        after={"status": interrupt.status},
        data={"run": frame.pk, "realm": realm, "remote": original["id"]},
        on_behalf=f"realm {realm}",
    )
    alert_raise(
        kind="interrupt.raised",
        level=LEVEL.get(interrupt.severity, Alert.Level.WARNING),
        title=f"Decision needed in realm {realm}: {interrupt.reason}"[:200],
        body=f"Work run {frame.pk} asked realm {realm} for ({where(address)}) waits for a "
        f"decision until {interrupt.deadline_at:%H:%M:%S %Z}; if nobody decides, {realm} "
        f"applies its default ({interrupt.default_action}).",
        target=interrupt,
        data={"run": frame.pk, "severity": interrupt.severity, "realm": realm},
    )
    return interrupt


def decide_copy(
    *, interrupt_id: int, actor, decision: str, payload: Any, comment: str
) -> Interrupt:
    """A copy of a peer's interrupt: checked here, decided there (no lock is held while the
    peer answers), and settled here as the peer's answer says."""
    copy = Interrupt.objects.get(pk=interrupt_id)
    if not copy.is_pending:
        raise Refused(409, "already_decided", already_decided(copy))
    check_decision(copy, decision, payload, comment)
    answer = decisions.decide_remote(
        copy, by=actor.get_username(), decision=decision, payload=payload, comment=comment
    )
    if answer.get("status") == Interrupt.Status.PENDING:  # one approval of a quorum there
        return copy_approved(interrupt_id=copy.pk, answer=answer, actor=actor, decision=decision)
    settled = copy_settle(interrupt_id=copy.pk, answer=answer, actor=actor)
    assert settled is not None
    return settled


@retry_deadlocks
@transaction.atomic(durable=True)
def copy_settle(*, interrupt_id: int, answer: dict[str, Any], actor=None) -> Interrupt | None:
    """The peer settled the interrupt this copy stands for (its answer to our decision, or
    its `loopstacks/Decided`): the copy leaves the inbox, settled the same way. `actor`: the
    person here whose decision the peer took."""
    copy = Interrupt.objects.select_for_update(of=("self",)).filter(pk=interrupt_id).first()
    if copy is None or not copy.remote:
        return None
    if not copy.is_pending:
        return copy  # our own answer and the peer's message: whichever came second
    status = answer.get("status")
    if status not in (
        Interrupt.Status.DECIDED,
        Interrupt.Status.EXPIRED,
        Interrupt.Status.WITHDRAWN,
    ):
        raise Refused(400, "invalid_request", f"{status!r} is not how an interrupt is settled")
    if actor is None and answer.get("realm") == settings.REALM_SLUG:
        # Our own person's decision, told back by the peer before our own answer to it was
        # recorded: the copy says the same whichever of the two messages came first.
        actor = get_user_model().objects.filter(username=answer.get("by")).first()
    here = actor is not None
    decision = str(answer.get("decision") or "")
    copy.move_to(
        status,
        at=parse_datetime(str(answer.get("at") or "")) or timezone.now(),
        decision=decision if decision in Interrupt.Decision.values else "",
        by=actor,
        payload=answer.get("payload"),
        comment=str(answer.get("comment") or "")[:4000],
    )
    if not here:
        copy.decided_by_name = str(answer.get("by") or "system")[:150]
        copy.decided_realm = str(answer.get("realm") or copy.remote.get("realm", ""))[:60]
    copy.save()
    realm = copy.remote.get("realm", "")
    verb = (
        f"interrupt.{PAST.get(copy.decision, copy.status)}"
        if status == "decided"
        else (f"interrupt.{status}")
    )
    audit_record(
        actor=actor,
        verb=verb,
        target=copy,
        note=copy.comment,
        before={"status": Interrupt.Status.PENDING},
        after={"status": copy.status, "decision": copy.decision, "payload": copy.payload},
        data={"run": copy.run_id, "realm": realm, "remote": copy.remote.get("id")},
        on_behalf="" if here else f"{copy.decided_by_name}@{copy.decided_realm}",
    )
    by = actor.get_username() if here else f"{copy.decided_by_name}@{copy.decided_realm}"
    alerts_retire(
        target=copy, why=f"interrupt {copy.pk} was settled in realm {realm}: {verb} by {by}"
    )
    push_on_commit(INBOX_GROUP, lambda: interrupt_update_html(copy.pk))
    overview_push()
    return copy


@retry_deadlocks
@transaction.atomic(durable=True)
def copy_approved(*, interrupt_id: int, answer: dict[str, Any], actor, decision: str) -> Interrupt:
    """The peer recorded our person's approval (or modify) of an interrupt that needs several
    (issue 18) and it is still pending there: the copy shows the approvals and the proposal
    as the peer's answer lists them (the peer's count is the one that decides; approvals
    given there by others show here with the next answer or the outcome)."""
    copy = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not copy.is_pending:
        return copy
    version = answer.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > 0:
        copy.proposal_version = version
    copy.proposal = answer.get("proposal", copy.proposal)
    copy.save(update_fields=["proposal", "proposal_version"])
    copy.approvals.all().delete()  # the peer's list replaces ours: it alone counts
    given = answer.get("approvals")
    listed: list[Any] = given if isinstance(given, list) else []
    rows = [
        InterruptApproval(
            interrupt=copy,
            by=str(a.get("by", "?"))[:220],
            role=str(a.get("role", ""))[:150],
            version=copy.proposal_version,
            modified=a.get("modified") is True,
            at=parse_datetime(str(a.get("at") or "")) or timezone.now(),
        )
        for a in listed[:20]
        if isinstance(a, dict)
    ]
    InterruptApproval.objects.bulk_create(rows, ignore_conflicts=True)
    realm = (copy.remote or {}).get("realm", "")
    audit_record(
        actor=actor,
        verb=f"interrupt.{PAST.get(decision, 'approved')}",
        target=copy,
        before={"status": Interrupt.Status.PENDING},
        after={"status": copy.status, "approvals": len(rows), "needed": copy.approvals_needed},
        data={"run": copy.run_id, "realm": realm, "remote": (copy.remote or {}).get("id")},
    )
    push_on_commit(INBOX_GROUP, lambda: interrupt_update_html(copy.pk))
    return copy
