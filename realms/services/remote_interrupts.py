"""One decision, wherever it is taken (DESIGN.md H9), as peers' messages arrive (the sending
side is realms.decisions):

- `loopstacks/Interrupt` (to the caller): the peer raised an interrupt in work a frame of
  ours asked for; if our outbound grant, too, lets our operators answer, its copy joins our
  inbox (both sides check).
- `loopstacks/Decided` (to the caller): the peer settled it; the copy leaves our inbox.
- `loopstacks/Decide` (to the owner): a person of the calling realm decides an interrupt
  raised here in work that realm asked for; this realm's lock decides who wins, and the
  loser gets the 409 naming who won, in which realm and when.

Every field a peer sends is checked here, and a malformed message is refused (400) before
anything is written."""

from __future__ import annotations

from typing import Any

import jsonschema
from django.utils.dateparse import parse_datetime

from common.refusals import Refused
from loops.models import LoopRun
from oversight.models import Interrupt
from oversight.services import copies, interrupts
from realms import grants
from realms.decisions import settled_view
from realms.frames import origin_of
from realms.models import Grant, Outgoing, Peer


def _bad(what: str) -> Refused:
    return Refused(400, "invalid_request", f"the message's {what}")


def _text(value: Any, what: str, limit: int, *, required: bool = False) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _bad(f"{what} must be a{' non-empty' if required else ''} string")
    return value[:limit]


def _id(value: Any, what: str) -> int:
    # Numbers in A2A metadata may travel as floats (a protobuf Struct).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{what} must be a number")
    if not (float(value).is_integer() and 0 < value < 2**62):
        raise _bad(f"{what} must be a positive whole number")
    return int(value)


def _original(given: Any) -> dict[str, Any]:
    if not isinstance(given, dict):
        raise _bad("interrupt must be an object")
    deadline = parse_datetime(str(given.get("deadline", "")))
    if deadline is None or deadline.tzinfo is None:
        raise _bad("interrupt's deadline must be an ISO 8601 time with its offset")
    schema = given.get("proposal_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise _bad("interrupt's proposal_schema must be an object")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise _bad(f"interrupt's proposal_schema is not a JSON schema: {exc.message}") from None
    address = given.get("address")
    return {
        "id": _id(given.get("id"), "interrupt's id"),
        "source": given.get("source")
        if given.get("source") in Interrupt.Source.values
        else Interrupt.Source.POLICY,
        "reason": _text(given.get("reason"), "interrupt's reason", 4000, required=True),
        "rationale": _text(given.get("rationale"), "interrupt's rationale", 8000),
        "proposal": given.get("proposal"),
        "proposal_schema": schema,
        # Only shown (oversight.presenting reads it defensively); a peer without it sends none.
        "limit": given.get("limit") if isinstance(given.get("limit"), dict) else None,
        "severity": given.get("severity")
        if given.get("severity") in Interrupt.Severity.values
        else Interrupt.Severity.WARNING,
        "deadline": deadline,
        "default": given.get("default")
        if given.get("default") in ("approve", "reject")
        else "reject",
        "address": address if isinstance(address, dict) else {},
        "url": _text(given.get("url"), "interrupt's url", 300),
        "approvals_needed": _approvals(given.get("approvals_needed")),
    }


def _approvals(value: Any) -> int:
    """Issue 18: how many people must approve; a peer without quorums sends none (one)."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int | float) or not 1 <= value <= 20:
        raise _bad("interrupt's approvals_needed must be a whole number from 1 to 20")
    return int(value)


def _frame_of(peer: Peer, key: Any) -> LoopRun:
    """The frame of ours whose call `key` is (its SendMessage to this peer)."""
    call = Outgoing.objects.filter(
        peer=peer, key=_text(key, "key", 120, required=True), method="SendMessage"
    ).first()
    frame = LoopRun.objects.filter(pk=call.run_id).first() if call and call.run_id else None
    if frame is None:
        raise Refused(404, "not_found", "no frame of this realm made that call")
    return frame


def interrupt_received(peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
    original = _original(params.get("interrupt"))
    frame = _frame_of(peer, params.get("key"))
    grant = grants.grant_of(peer, Grant.Direction.OUTBOUND)
    if grant is None or not grant.answer_interrupts:
        # Our admins did not let our operators answer this peer's interrupts: it stays
        # the peer's alone (it decides, or its default applies).
        return {"shown": False}
    copy = copies.copy_raise(frame=frame, realm=peer.slug, original=original)
    return {"shown": True, "copy": copy.pk}


def settled_received(peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
    original = _id(params.get("interrupt"), "interrupt")
    copy = Interrupt.objects.filter(remote__realm=peer.slug, remote__id=original).first()
    if copy is None:
        return {"copy": None}  # never shown here (our grant did not allow it)
    answer = {
        "status": _text(params.get("status"), "status", 12, required=True),
        "decision": _text(params.get("decision"), "decision", 8),
        "payload": params.get("payload"),
        "comment": _text(params.get("comment"), "comment", 4000),
        "by": _text(params.get("by"), "by", 150),
        "realm": _text(params.get("realm"), "realm", 60),
        "at": _text(params.get("at"), "at", 40),
    }
    copies.copy_settle(interrupt_id=copy.pk, answer=answer)
    return {"copy": copy.pk}


def decide_received(peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
    interrupt_id = _id(params.get("interrupt"), "interrupt")
    by = _text(params.get("by"), "by (the person deciding)", 150, required=True)
    decision = _text(params.get("decision"), "decision", 8, required=True)
    comment = _text(params.get("comment"), "comment", 4000)
    interrupt = Interrupt.objects.select_related("run").filter(pk=interrupt_id).first()
    origin = origin_of(interrupt.run) if interrupt is not None else None
    if interrupt is None or not origin or origin.get("realm") != peer.slug:
        raise Refused(
            404,
            "not_found",
            f"no interrupt {interrupt_id} here in work realm {peer.slug} asked for",
        )
    grant = grants.grant_of(peer, Grant.Direction.INBOUND)
    if grant is None or not grant.answer_interrupts:
        raise Refused(
            403,
            "forbidden",
            f"this realm's grant does not let realm {peer.slug}'s operators answer its interrupts",
        )
    decided = interrupts.interrupt_decide(
        interrupt_id=interrupt.pk,
        actor=None,
        decision=decision,
        payload=params.get("payload"),
        comment=comment,
        on_behalf=(by, peer.slug),
    )
    return settled_view(decided)
