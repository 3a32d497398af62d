"""The realm's public wire (DESIGN.md section 8): its signed agent card, the A2A JSON-RPC
endpoint, and the endpoint peers push task status to. No session, no CSRF: every caller is
a peer that signs (or a client peer with its token), checked by realms.callers before the
body is acted on. A malformed or unauthenticated call gets a JSON-RPC error and changes
nothing."""

from __future__ import annotations

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from common.refusals import Refused
from realms import callers, handler
from realms.cards import CardInfo, own_card
from realms.frames import EXTENSION
from realms.models import Peer
from realms.services import bids, frames, peers, remote_halts, remote_interrupts

# The federation extension's methods a peer realm calls (DESIGN.md section 8).
EXTENSION_METHODS = {
    "loopstacks/Bid": bids.bid_received,
    "loopstacks/Halt": remote_halts.halt_received,
    "loopstacks/Lift": remote_halts.lift_received,
    "loopstacks/Interrupt": remote_interrupts.interrupt_received,
    "loopstacks/Decided": remote_interrupts.settled_received,
    "loopstacks/Decide": remote_interrupts.decide_received,
}


@require_GET
def agent_card(request: HttpRequest) -> JsonResponse:
    return JsonResponse(own_card())


def _refused(rid, exc: Refused) -> JsonResponse:
    body = handler.invalid_request(rid, exc.detail)
    body["error"]["data"] = [{"reason": exc.code}]
    return JsonResponse(body, status=exc.status)


@csrf_exempt
@require_POST
async def a2a(request: HttpRequest) -> JsonResponse:
    raw = request.body
    data = handler.body_of(raw)
    if data is None:
        return JsonResponse(handler.parse_error("the body is not a JSON object"), status=400)
    rid = data.get("id") if isinstance(data.get("id"), str | int) else None
    headers = dict(request.headers)
    params = data.get("params", {})
    try:
        who = await sync_to_async(callers.caller)(
            request.method or "POST", request.get_full_path(), headers, raw, data
        )
        if not isinstance(params, dict) or not isinstance(data.get("method"), str):
            raise Refused(400, "invalid_request", "a call names its method and gives an object")
        if isinstance(who, CardInfo):
            await sync_to_async(peers.pair_received)(params.get("realm"))
            return JsonResponse({"jsonrpc": "2.0", "id": rid, "result": {"received": True}})
        if data.get("method") in callers.PAIRING_ANSWERS:
            await sync_to_async(peers.answer_received)(who, data["method"])
            return JsonResponse({"jsonrpc": "2.0", "id": rid, "result": {"received": True}})
        if data.get("method") in EXTENSION_METHODS and who.kind == Peer.Kind.REALM:
            service = EXTENSION_METHODS[data["method"]]
            answer = await sync_to_async(service)(who, params)
            return JsonResponse({"jsonrpc": "2.0", "id": rid, "result": answer})
    except Refused as exc:
        return _refused(rid, exc)
    await sync_to_async(_seen)(who)
    return JsonResponse(await handler.dispatch(data, headers, who))


@csrf_exempt
@require_POST
def push(request: HttpRequest) -> JsonResponse:
    """A peer's task changed: {"task": {...}}, about a frame of ours in that realm."""
    raw = request.body
    data = handler.body_of(raw) or {}
    try:
        who = callers.caller(
            request.method or "POST", request.get_full_path(), dict(request.headers), raw, data
        )
        if not isinstance(who, Peer) or who.kind != Peer.Kind.REALM:
            raise Refused(403, "forbidden", "only a peer realm pushes task status")
        task = handler.task_checked(callers.push_task(data))
        origin = (task.get("metadata", {}).get(EXTENSION) or {}).get("origin")
        # Numbers in A2A metadata travel as a protobuf Struct: as JSON numbers, floats.
        frame_id = origin.get("run") if isinstance(origin, dict) else None
        if not isinstance(frame_id, int | float) or not (
            float(frame_id).is_integer() and 0 < frame_id < 2**62
        ):
            raise Refused(400, "invalid_request", "the task names no frame of this realm")
    except Refused as exc:
        return JsonResponse({"error": exc.code, "detail": exc.detail}, status=exc.status)
    _seen(who)
    frames.frame_task(frame_id=int(frame_id), realm=who.slug, task=task)
    return JsonResponse({"received": True})


def _seen(peer: Peer) -> None:
    # Heard from, not reached: whether we reach it is what our probes and deliveries say
    # (realms.services.partitions), since a peer without its web process still calls us.
    Peer.objects.filter(pk=peer.pk).update(last_seen_at=timezone.now())
