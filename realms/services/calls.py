"""The callee's side (DESIGN.md section 8): a peer's (or a client peer's) SendMessage,
GetTask and CancelTask, answered from PostgreSQL. A call is checked against this realm's
inbound grant, its path (a realm already on it: a cycle), its TTL and its bounds; a refused
call is REJECTED with the reason and recorded here (an Incoming row naming it). An accepted
call starts a root run whose `origin` names the caller; the same idempotency key again
answers with the same task, so a delivery retried after a lost answer starts nothing new."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from common.refusals import Refused
from loops import services as loops_services
from loops.declare import BLUEPRINTS, MAX_STACK_DEPTH
from loops.models import LoopRun
from realms import grants
from realms.cards import EXTENSION
from realms.frames import task_of
from realms.identity import me
from realms.models import Grant, Incoming, Peer


def _rejected(incoming: Incoming) -> dict[str, Any]:
    return {
        "id": f"rejected-{incoming.pk}",
        "contextId": f"rejected-{incoming.pk}",
        "status": {
            "state": "TASK_STATE_REJECTED",
            "message": {
                "messageId": f"{me().slug}:rejected:{incoming.pk}",
                "role": "ROLE_AGENT",
                "parts": [{"text": incoming.refusal}],
            },
        },
        "metadata": {EXTENSION: {"reason": incoming.refusal, "realm": me().slug}},
    }


def _answer(incoming: Incoming) -> dict[str, Any]:
    if incoming.run_id is None:
        return _rejected(incoming)
    return task_of(LoopRun.objects.get(pk=incoming.run_id))


def call_received(peer: Peer, message: dict[str, Any], push: dict[str, Any]) -> dict[str, Any]:
    """SendMessage: the Task it started (or the one the same key started before), or a
    REJECTED task with the reason."""
    ext = (message.get("metadata") or {}).get(EXTENSION)
    ext = ext if isinstance(ext, dict) else {}  # a stock client's call carries none
    key = str(ext.get("key") or message.get("messageId") or "")[:120]
    if not key:
        raise Refused(400, "invalid_request", "the message has no messageId")
    if (earlier := Incoming.objects.filter(peer=peer, key=key).first()) is not None:
        return _answer(earlier)
    blueprint, value = _what(message)
    why, bounds = _refusal(peer, blueprint, ext)
    asked_by = ext.get("origin") or {}
    origin = {
        "realm": peer.slug,
        # Numbers in A2A metadata travel as a protobuf Struct: as JSON numbers, floats.
        "run": _whole(asked_by.get("run")),
        "root": _whole(asked_by.get("root")),
        "path": [*ext.get("path", []), me().slug] if peer.kind == Peer.Kind.REALM else [me().slug],
        "ttl": bounds["ttl"],
        "depth": bounds["depth"],
        "max_depth": bounds["max_depth"],
    }
    try:
        with transaction.atomic(durable=True):
            incoming = Incoming.objects.create(
                peer=peer,
                key=key,
                refusal=why,
                push_url=str(push.get("url", ""))[:300],
                push_token=str(push.get("token", ""))[:200],
            )
            if not why:
                try:
                    with transaction.atomic():  # a refusal rolls the start back, not the key
                        run = loops_services.run_start_in(
                            domain=BLUEPRINTS[blueprint].domain,
                            blueprint=blueprint,
                            input=value,
                            origin=origin,
                            budget=bounds["budget"],
                        )
                except Refused as exc:  # a halt of the domain (423), say: rejected, recorded
                    incoming.refusal = exc.detail
                else:
                    incoming.run_id = run.pk
                incoming.save()
    except IntegrityError:  # the same key twice at once: the other one answers
        return _answer(Incoming.objects.get(peer=peer, key=key))
    return _answer(incoming)


def _whole(value: Any) -> int | None:
    """A whole number the metadata gives (as a float: a protobuf Struct), or None."""
    if isinstance(value, int | float) and float(value).is_integer() and abs(value) < 2**53:
        return int(value)
    return None


def _given(value: Any, default: int) -> int:
    whole = _whole(value)
    return default if whole is None else whole


def _what(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The blueprint called and its input: a data part {"blueprint", "input"}; a stock
    client may name the skill in the message's metadata ("skill") and send the input as
    the data part itself."""
    data = next(
        (p["data"] for p in message.get("parts", []) if isinstance(p.get("data"), dict)), None
    )
    skill = (message.get("metadata") or {}).get("skill")
    if data is not None and "blueprint" in data:
        value = data.get("input", {})
        return str(data["blueprint"]), value if isinstance(value, dict) else {"value": value}
    if isinstance(skill, str):
        return skill, data or {}
    raise Refused(
        400,
        "invalid_request",
        'name the blueprint: a data part {"blueprint": ..., "input": {...}}, or '
        'metadata {"skill": ...} with the input as the data part',
    )


def _refusal(peer: Peer, blueprint: str, ext: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Why this realm refuses the call ("" if it does not), and the bounds it runs under."""
    path = [str(p) for p in ext["path"]] if isinstance(ext.get("path"), list) else []
    ttl = _given(ext.get("ttl"), 8)  # a stock client's call crosses no other realm
    depth = max(0, _given(ext.get("depth"), 0))
    bound = min(MAX_STACK_DEPTH, _given(ext.get("max_depth"), MAX_STACK_DEPTH))
    budget = ext.get("budget")
    grant = grants.grant_of(peer, Grant.Direction.INBOUND)
    bounds = {
        "ttl": ttl - 1,
        "depth": depth,
        "max_depth": min(bound, depth + (grant.max_depth if grant else 0)),
        # The callee never spends more than the call reserved, nor than its grant allows.
        "budget": min(
            (b for b in (budget, grant.budget if grant else None) if isinstance(b, int | float)),
            default=None,
        ),
    }
    spec = BLUEPRINTS.get(blueprint)
    if me().slug in path:
        return f"the call enters realm {me().slug} again (path {' → '.join(path)}): a cycle", bounds
    if ttl < 1:
        return "the call's TTL ran out", bounds
    if spec is None or not spec.export or spec.remote:
        return f"realm {me().slug} exports no blueprint {blueprint!r}", bounds
    ask = grants.Ask(blueprint, depth=bound - depth, budget=bounds["budget"])
    return grants.refusal(peer, Grant.Direction.INBOUND, ask), bounds


def task_get(peer: Peer, task_id: str) -> dict[str, Any] | None:
    incoming = _incoming(peer, task_id)
    return _answer(incoming) if incoming else None


def task_cancel(peer: Peer, task_id: str, key: str = "") -> dict[str, Any] | None:
    """The caller cancelled its frame: cancel the run (and its subtree) started for it."""
    incoming = _incoming(peer, task_id) or Incoming.objects.filter(peer=peer, key=key).first()
    if incoming is None:
        return None
    if incoming.run_id is not None:
        run = LoopRun.objects.get(pk=incoming.run_id)
        if run.state not in LoopRun.TERMINAL:
            loops_services.run_cancel(
                run_id=run.pk, reason=f"cancelled by realm {peer.slug}, which asked for it"
            )
    return _answer(incoming)


def _incoming(peer: Peer, task_id: str) -> Incoming | None:
    """Only the peer that asked may see or cancel a task."""
    if task_id.startswith("rejected-"):
        pk = task_id.removeprefix("rejected-")
        return Incoming.objects.filter(peer=peer, pk=int(pk)).first() if pk.isdigit() else None
    if not task_id.isdigit():
        return None
    return Incoming.objects.filter(peer=peer, run_id=int(task_id)).first()
