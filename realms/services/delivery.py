"""Delivering the outbox (DESIGN.md section 8, "Nothing lost"): each message is signed and
POSTed to its peer until the peer answers, with backoff and full jitter between attempts,
behind the peer's circuit breaker (scope peer, DESIGN.md H3): while it is open nothing is
sent to the peer; half-open, one message goes as the trial, whose answer closes it;
the peer is idempotent by the message's key, so a delivery repeated after a lost answer
does no harm. A message is claimed by moving its due time past the call's timeout, so two
workers never send it at once, and a worker that dies mid-call leaves it due again.

An answer that refuses the message for good (a JSON-RPC error that is the sender's fault)
ends it; for a call, the frame then ends as rejected. Anything else (no answer, a 5xx, a
401 that a restarted peer's replay cache may give) is tried again."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from typing import Any

import httpx
from django.db import transaction
from django.utils import timezone

from common.backoff import backoff
from oversight.models import CircuitBreaker
from oversight.services.breakers import Call
from oversight.services.breakers import breaker_record as record_call
from realms import fragments, wire
from realms.models import Outgoing, Peer
from realms.services import frames

log = logging.getLogger(__name__)
TIMEOUT = 10.0
# A peer that cannot be reached fails fast (a worker may deliver from inside a step).
TIMEOUTS = httpx.Timeout(TIMEOUT, connect=2.0)
# JSON-RPC errors that retrying cannot fix: the request itself is wrong.
FOR_GOOD = {-32700, -32600, -32601, -32602, -32001, -32002, -32004}


def deliver(message_id: int) -> bool:
    """Send one message if it is due; True once it is delivered (or ended for good)."""
    message = _claim(message_id)
    if message is None:
        return False
    peer = message.peer
    if message.method == "push":
        url, body = message.params["url"], message.params["body"]
    else:
        url = f"{peer.url}/a2a"
        body = {
            "jsonrpc": "2.0",
            "id": message.key,
            "method": message.method,
            "params": message.params,
        }
    raw = json.dumps(body, separators=(",", ":")).encode()
    headers = {**wire.signed_headers("POST", url, raw), "A2A-Version": "1.0"}
    started = time.monotonic()
    try:
        response = wire.http().post(url, content=raw, headers=headers, timeout=TIMEOUTS)
        answer = response.json() if response.content else {}
    except (httpx.HTTPError, ValueError) as exc:
        peer_breaker_record(peer, ok=False, started=started)
        return _again(message, f"{type(exc).__name__}: {exc}")
    peer_breaker_record(peer, ok=response.status_code < 500, started=started)
    if response.status_code >= 500 or response.status_code in (401, 429):
        return _again(message, f"HTTP {response.status_code}: {response.text[:300]}")
    error = answer.get("error") if isinstance(answer, dict) else None
    if response.status_code >= 400 or (error and error.get("code") in FOR_GOOD):
        return _ended(message, f"HTTP {response.status_code}: {json.dumps(error or answer)[:500]}")
    if error:
        return _again(message, json.dumps(error)[:500])
    _delivered(message, answer.get("result") if isinstance(answer, dict) else None)
    return True


def _claim(message_id: int) -> Outgoing | None:
    # Only the message's row is locked (of self): locking its peer's too, as select_related
    # would, made a second worker's delivery to the same peer skip its own message.
    with transaction.atomic():
        message = (
            Outgoing.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("peer")
            .filter(pk=message_id, delivered_at=None, failed_at=None, due_at__lte=timezone.now())
            .first()
        )
        if message is None:
            return None
        if message.peer.status == Peer.Status.SUSPENDED:
            return None  # nothing leaves for a suspended peer; approving it again sends it
        if (held_until := _breaker_holds(message.peer)) is not None:
            message.due_at = held_until
            message.save(update_fields=["due_at"])
            return None
        message.attempts += 1
        message.due_at = timezone.now() + timedelta(seconds=TIMEOUT * 3)
        message.save(update_fields=["attempts", "due_at"])
    return message


def breaker_holds_probe(peer: Peer) -> bool:
    """True while the peer's breaker holds calls back (open, or half-open with another
    call as its trial): a probe then only measures; otherwise it counts as a call."""
    with transaction.atomic():
        return _breaker_holds(peer) is not None


def breaker_name(peer: Peer) -> str:
    return f"peer-{peer.slug}"


def _breaker_holds(peer: Peer):
    """In the claim's transaction: when the peer's breaker lets the next message go, or
    None if it may go now (half-open: this one is the trial, taken by compare-and-set)."""
    now = timezone.now()
    breaker = CircuitBreaker.objects.select_for_update().filter(name=breaker_name(peer)).first()
    if breaker is None or breaker.state == CircuitBreaker.State.CLOSED:
        return None
    if breaker.state == CircuitBreaker.State.OPEN:
        return breaker.retry_at or now + timedelta(seconds=breaker.cooldown_s)
    if breaker.trial_at is not None:
        return now + timedelta(seconds=1)  # another message is the trial
    breaker.trial_at = now
    breaker.save(update_fields=["trial_at"])
    return None


def peer_breaker_record(peer: Peer, *, ok: bool, started: float) -> None:
    latency = (time.monotonic() - started) * 1000
    with transaction.atomic():
        breaker = CircuitBreaker.objects.select_for_update().filter(name=breaker_name(peer)).first()
        if breaker is not None:
            record_call(breaker, Call(agent_id=0, ok=ok, latency_ms=latency), now=timezone.now())


def _again(message: Outgoing, error: str) -> bool:
    wait = backoff(message.attempts, base=0.5, cap=60.0)
    Outgoing.objects.filter(pk=message.pk).update(
        due_at=timezone.now() + timedelta(seconds=wait), last_error=error
    )
    reachability_set(message.peer, ok=False)
    log.warning("delivery to %s failed, again in %.1f s: %s", message.peer.slug, wait, error)
    return False


def _ended(message: Outgoing, error: str) -> bool:
    with transaction.atomic():
        Outgoing.objects.filter(pk=message.pk).update(failed_at=timezone.now(), last_error=error)
    log.error("the peer %s refused %s for good: %s", message.peer.slug, message.key, error)
    if message.method == "SendMessage" and message.run_id:
        reason = {
            "status": {"state": "TASK_STATE_REJECTED"},
            "metadata": {frames.EXTENSION: {"reason": error}},
        }
        frames.frame_task(frame_id=message.run_id, realm=message.peer.slug, task=reason)
    return True


def _delivered(message: Outgoing, result: Any) -> None:
    now = timezone.now()
    Outgoing.objects.filter(pk=message.pk).update(delivered_at=now, last_error="")
    reachability_set(message.peer, ok=True)
    fragments.delivered(message)  # a halt's message: one more peer realm confirmed it
    if message.method == "SendMessage" and message.run_id and isinstance(result, dict):
        task = result.get("task")
        if isinstance(task, dict):
            frames.frame_task(frame_id=message.run_id, realm=message.peer.slug, task=task)


def due() -> list[int]:
    return list(
        Outgoing.objects.filter(delivered_at=None, failed_at=None, due_at__lte=timezone.now())
        .order_by("due_at")
        .values_list("pk", flat=True)[:500]
    )


def frames_reconcile() -> int:
    """Every open frame whose call was answered: ask its peer for the task (a lost push
    loses nothing); a frame refused before it left ends. Returns how many were asked."""
    asked = 0
    for frame in frames.open_frames().filter(state=frames.State.WAITING):
        remote = frame.remote or {}
        if remote.get("state") == "rejected":
            frames.frame_refused(frame_id=frame.pk)
            continue
        peer = Peer.objects.filter(slug=remote.get("realm"), kind=Peer.Kind.REALM).first()
        if peer is None or not remote.get("task") or not peer.paired:
            continue
        task = get_task(peer, str(remote["task"]))
        asked += 1
        if task is not None:
            frames.frame_task(frame_id=frame.pk, realm=peer.slug, task=task)
    return asked


def get_task(peer: Peer, task_id: str) -> dict[str, Any] | None:
    try:
        rid = f"get-{task_id}"
        answer = wire.rpc(peer.url, "GetTask", {"id": task_id}, rid=rid, timeout=TIMEOUTS).json()
    except (httpx.HTTPError, ValueError):
        reachability_set(peer, ok=False)
        return None
    result = answer.get("result") if isinstance(answer, dict) else None
    return result if isinstance(result, dict) else None


def reachability_set(peer: Peer, *, ok: bool, latency_ms: float | None = None) -> None:
    """What a probe or a delivery found; `unreachable_since` keeps the first failure."""
    now = timezone.now()
    peers = Peer.objects.filter(pk=peer.pk)
    if ok:
        fields: dict[str, object] = {"reachable": True, "unreachable_since": None}
        if latency_ms is not None:
            fields |= {"latency_ms": latency_ms, "probed_at": now}
        changed = peers.exclude(reachable=True, unreachable_since=None).exists()
        peers.update(**fields)
    else:
        changed = peers.filter(reachable=True).exists()
        peers.filter(unreachable_since=None).update(unreachable_since=now)
        peers.update(reachable=False, probed_at=now)
    if changed:
        log.warning("peer %s is %s", peer.slug, "reachable again" if ok else "unreachable")
    fragments.peers_maybe_changed()  # the Realms pages and stacks, if what they show changed
