"""A halt that follows the work (DESIGN.md H8), on the callee's side: a peer that halted a
frame of its stack tells this realm (`loopstacks/Halt`), which halts the run tree the
frame's call started here, on the peer's behalf, audited and shown with the peer's realm,
person and reason; from this realm's halt commit on, no step starts in that tree, and its
own remote frames tell their peers in turn (onward). The peer's lift (`loopstacks/Lift`)
lifts that halt and no other: this realm's own halts stay its own."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from common.refusals import Refused
from oversight.services import halts
from realms.models import Incoming, Peer


def _incoming(peer: Peer, params: dict[str, Any]) -> Incoming:
    incoming = Incoming.objects.filter(peer=peer, key=str(params.get("key", ""))[:120]).first()
    if incoming is None or incoming.run_id is None:
        raise Refused(404, "not_found", "no run here was started by that call")
    return incoming


def _why(peer: Peer, params: dict[str, Any], what: str) -> str:
    given = params.get("halt")
    halt: dict[str, Any] = given if isinstance(given, dict) else {}
    by, reason = str(halt.get("by", "?"))[:150], str(halt.get("reason", ""))[:1500]
    return f"{what} by realm {peer.slug} ({by}): {reason or 'no reason given'}"


def halt_received(peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
    incoming = _incoming(peer, params)
    if incoming.halt_id is not None:
        return {"halt": incoming.halt_id}  # the same message again
    halt, created = halts.halt_engage(
        actor=None, scope=f"run:{incoming.run_id}", reason=_why(peer, params, "halted")
    )
    if created:  # an active halt of this realm's own covers it already: not the peer's
        Incoming.objects.filter(pk=incoming.pk).update(halt_id=halt.pk)
    return {"halt": halt.pk, "parked": halt.parked}


def lift_received(peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
    incoming = _incoming(peer, params)
    if incoming.halt_id is None:
        return {"lifted": None}  # nothing of the peer's holds here (lifted, or never ours)
    halt_id = incoming.halt_id
    try:
        halts.halt_lift(halt_id=halt_id, actor=None, reason=_why(peer, params, "lifted"))
    except Refused as exc:
        if exc.code != "already_lifted":
            raise
    with transaction.atomic():
        Incoming.objects.filter(pk=incoming.pk, halt_id=halt_id).update(halt_id=None)
    return {"lifted": halt_id}
