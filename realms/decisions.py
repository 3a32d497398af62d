"""One decision, wherever it is taken (DESIGN.md H9): the parts oversight calls, a leaf over
the realms models, grants and wire, so that oversight.services.interrupts may call it
without importing the realms services.

An interrupt raised in work a peer asked for belongs to this realm (its deadline, its
default, its lock decides who wins). When this realm's inbound grant lets the peer's
operators answer, a copy goes to the peer (`loopstacks/Interrupt`); whatever settles it
here (a person of either realm, the deadline, the run ending) is told to the peer
(`loopstacks/Decided`), whose copy leaves its inbox. A person who decides the copy in the
caller decides here, at once (`loopstacks/Decide`, synchronous): this realm's answer is the
decision, or the 409 naming who won, in which realm and when.
"""

from __future__ import annotations

from typing import Any

import httpx
from django.urls import reverse

from common.refusals import Refused
from realms import grants, outbox, wire
from realms.frames import origin_of
from realms.identity import me
from realms.models import Grant, Incoming, Outgoing, Peer

TIMEOUTS = httpx.Timeout(10.0, connect=2.0)


def interrupt_follows(interrupt) -> None:
    """In the transaction that raised `interrupt`: its copy to the realm that asked for the
    work, if this realm's grant lets that realm's operators answer it."""
    origin = origin_of(interrupt.run)
    if not origin:
        return
    peer = Peer.objects.filter(slug=origin.get("realm"), kind=Peer.Kind.REALM).first()
    grant = grants.grant_of(peer, Grant.Direction.INBOUND) if peer else None
    if peer is None or grant is None or not grant.answer_interrupts:
        return
    root = interrupt.run.root_id or interrupt.run.pk
    incoming = Incoming.objects.filter(peer=peer, run_id=root).first()
    if incoming is None:
        return
    params = {"key": incoming.key, "interrupt": _public(interrupt)}
    key = f"{me().slug}:interrupt:{interrupt.pk}"
    outbox.queue(peer, "loopstacks/Interrupt", params, key=key, run_id=interrupt.run_id)


def interrupt_settled(interrupt) -> None:
    """In the transaction that settled `interrupt` (decided, expired or withdrawn): the peer
    that holds a copy is told how, by whom, in which realm and when."""
    sent = (
        Outgoing.objects.filter(key=f"{me().slug}:interrupt:{interrupt.pk}")
        .select_related("peer")
        .first()
    )
    if sent is None:
        return
    params = {"interrupt": interrupt.pk, **settled_view(interrupt)}
    key = f"{me().slug}:decided:{interrupt.pk}"
    outbox.queue(sent.peer, "loopstacks/Decided", params, key=key, run_id=interrupt.run_id)


def settled_view(interrupt) -> dict[str, Any]:
    """How an interrupt was settled, as both realms name it."""
    by = interrupt.decided_by.get_username() if interrupt.decided_by else interrupt.decided_by_name
    return {
        "status": interrupt.status,
        "decision": interrupt.decision,
        "payload": interrupt.payload,
        "comment": interrupt.comment,
        "by": by or "system",
        "realm": interrupt.decided_realm or me().slug,
        "at": interrupt.decided_at.isoformat() if interrupt.decided_at else None,
        # Issue 18: under a quorum, who approved the proposal as it stands (a pending answer
        # to a copy's approval carries them, and the proposal, which a modify may change).
        "approvals_needed": interrupt.approvals_needed,
        "approvals": [
            {"by": a.by, "role": a.role, "at": a.at.isoformat(), "modified": a.modified}
            for a in interrupt.current_approvals
        ],
        "proposal": interrupt.proposal,
        "version": interrupt.proposal_version,
    }


def _public(interrupt) -> dict[str, Any]:
    return {
        "id": interrupt.pk,
        "source": interrupt.source,
        "reason": interrupt.reason,
        "rationale": interrupt.rationale,
        "proposal": interrupt.proposal,
        "proposal_schema": interrupt.proposal_schema,
        "limit": interrupt.limit,  # what the proposal crossed, so the copy says it in words
        "approvals_needed": interrupt.approvals_needed,  # issue 18: people who must approve
        "severity": interrupt.severity,
        "deadline": interrupt.deadline_at.isoformat(),
        "default": interrupt.default_action,
        "address": interrupt.address,
        "raised_at": interrupt.created_at.isoformat(),
        "url": f"{me().url}{reverse('oversight:interrupt-detail', args=[interrupt.pk])}",
    }


def decide_remote(
    interrupt, *, by: str, decision: str, payload: Any, comment: str
) -> dict[str, Any]:
    """Decide the copy `interrupt` in the realm that owns it, now. Its answer (how it was
    settled there) or Refused: the owner's own refusal (409 naming the winner, 400 for a
    payload it does not take, 403 when its grant no longer lets us answer), or 503 when it
    cannot be reached (nothing was decided)."""
    remote = interrupt.remote or {}
    slug = str(remote.get("realm", "?"))
    peer = Peer.objects.filter(slug=slug, kind=Peer.Kind.REALM).first()
    if peer is None or not peer.paired:
        raise Refused(
            409, "peer_not_paired", f"Realm {slug} is not an approved peer: it decides there."
        )
    params = {
        "interrupt": remote.get("id"),
        "decision": decision,
        "payload": payload,
        "comment": comment,
        "by": by,
    }
    rid = f"{me().slug}:decide:{interrupt.pk}"
    try:
        response = wire.rpc(peer.url, "loopstacks/Decide", params, rid=rid, timeout=TIMEOUTS)
        answer = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise Refused(
            503,
            "peer_unreachable",
            f"Realm {slug}, which owns this decision, cannot be reached ({type(exc).__name__}); "
            f"nothing was decided. Try again, or decide in {slug}'s console.",
        ) from None
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict):
        data = error.get("data")
        reason = data[0].get("reason") if isinstance(data, list) and data else None
        status = response.status_code if 400 <= response.status_code < 500 else 502
        detail = str(error.get("message", "refused"))[:500]
        raise Refused(status, str(reason or "peer_refused"), f"Realm {slug}: {detail}")
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, dict):
        raise Refused(502, "peer_error", f"Realm {slug} gave no answer to the decision.")
    return result
