"""Remote frames, the part the loops services call (DESIGN.md section 8): a leaf helper
over the models, so that loops may use it without importing the realms services.

frame_call: a child "<realm>:<blueprint>" was spawned; in the spawning transaction the
frame waits, and its SendMessage is queued (or, refused by this side's grant, a path that
would loop, or an unknown peer, the refusal is recorded and settled after commit).
origin_bounds: the depth a root run started for another realm may still use.
origin_notify: a run another realm asked for ended (or changed): its status is pushed back.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction

from loops.models import LoopRun
from realms import grants, outbox
from realms.cards import EXTENSION
from realms.identity import me
from realms.models import Grant, Incoming, Peer
from realms.sight import view_of
from realms.tasks_names import FRAME_REFUSED

MAX_TTL = 8  # realms a call may still cross


def origin_of(run: LoopRun) -> dict[str, Any] | None:
    """The origin of the run's root (None for work this realm started itself)."""
    if run.parent_id is None:
        return run.origin
    root = run.root_id or run.pk
    return LoopRun.objects.filter(pk=root).values_list("origin", flat=True).first()


def origin_bounds(run: LoopRun, max_stack: int) -> tuple[int, int]:
    """(the depth the caller's frame had, the depth bound) of the run's stack: a root run a
    peer asked for sits at its caller's frame's depth, under the bound the call carried."""
    origin = origin_of(run)
    if not origin:
        return 0, max_stack
    return int(origin.get("depth", 0)), min(max_stack, int(origin.get("max_depth", max_stack)))


def frame_call(frame: LoopRun, remote: tuple[str, str], trace, max_stack: int) -> None:
    realm, blueprint = remote
    offset, bound = origin_bounds(frame, max_stack)
    origin = origin_of(frame) or {}
    path = origin.get("path") or [me().slug]  # the realms the work crossed, this one last
    ttl = int(origin.get("ttl", MAX_TTL + 1)) - 1
    peer = Peer.objects.filter(slug=realm, kind=Peer.Kind.REALM).first()
    depth = offset + frame.depth
    ask = grants.Ask(blueprint, depth=bound - depth, budget=frame.budget)
    if peer is None:
        why = f"realm {realm} is not a peer of this realm"
    elif realm in path:
        why = f"the call would enter realm {realm} again (path {' → '.join(path)}): a cycle"
    elif ttl < 1:
        why = "the call's TTL ran out"
    else:
        why = grants.refusal(peer, Grant.Direction.OUTBOUND, ask)
    frame.remote = {"realm": realm, "blueprint": blueprint, "task": "", "state": "submitted"}
    if why:
        frame.remote.update(state="rejected", reason=why)
        trace.add(frame.pk, "remote.refused", {"realm": realm, "reason": why, "by": me().slug})
        transaction.on_commit(
            lambda: current_app.send_task(FRAME_REFUSED, (frame.pk,)), robust=True
        )
        return
    assert peer is not None
    key = f"{me().slug}:call:{frame.pk}"
    params = {
        "message": {
            "messageId": key,
            "role": "ROLE_USER",
            "parts": [{"data": {"blueprint": blueprint, "input": frame.input}}],
            "extensions": [EXTENSION],
            "metadata": {
                EXTENSION: {
                    "origin": {"realm": me().slug, "run": frame.pk, "root": frame.root_id},
                    "path": path,
                    "ttl": ttl,
                    "depth": depth,
                    "max_depth": bound,
                    "deadline": frame.deadline_at.isoformat() if frame.deadline_at else None,
                    "budget": frame.budget,
                    "key": key,
                }
            },
        },
        "configuration": {
            "returnImmediately": True,
            "taskPushNotificationConfig": {"url": f"{me().url}/a2a/push", "token": key},
        },
    }
    outbox.queue(peer, "SendMessage", params, key=key, run_id=frame.pk)
    trace.add(frame.pk, "remote.called", {"realm": realm, "blueprint": blueprint})


# DESIGN.md section 8's state mapping. Paused and halted are WORKING with a substate.
TASK_STATES: dict[str, str] = {
    LoopRun.State.PENDING: "TASK_STATE_WORKING",
    LoopRun.State.RUNNING: "TASK_STATE_WORKING",
    LoopRun.State.WAITING: "TASK_STATE_WORKING",
    LoopRun.State.PAUSED: "TASK_STATE_WORKING",
    LoopRun.State.HALTED: "TASK_STATE_WORKING",
    LoopRun.State.INTERRUPTED: "TASK_STATE_INPUT_REQUIRED",
    LoopRun.State.SUCCEEDED: "TASK_STATE_COMPLETED",
    LoopRun.State.EXHAUSTED: "TASK_STATE_COMPLETED",
    LoopRun.State.FAILED: "TASK_STATE_FAILED",
    LoopRun.State.CANCELLED: "TASK_STATE_CANCELED",
}


def task_of(run: LoopRun) -> dict[str, Any]:
    """The run as an A2A Task (ProtoJSON, as a2a-sdk writes it)."""
    ext: dict[str, Any] = {
        "state": run.state,
        "exit_reason": run.exit_reason,
        "cost": run.cost,
        "origin": run.origin,
    }
    if run.state in (LoopRun.State.PAUSED, LoopRun.State.HALTED):
        ext["substate"] = run.state
    ext["view"] = view_of(run)  # what the asking peer's grant lets it see (realms.sight)
    task: dict[str, Any] = {
        "id": str(run.pk),
        "contextId": str(run.root_id or run.pk),
        "status": {"state": TASK_STATES[run.state]},
        "metadata": {EXTENSION: ext},
    }
    if run.state in LoopRun.TERMINAL:
        task["status"]["message"] = {
            "messageId": f"{me().slug}:{run.pk}:{run.state}",
            "role": "ROLE_AGENT",
            "parts": [{"text": run.exit_detail or run.exit_reason or run.state}],
        }
        if run.result is not None:
            task["artifacts"] = [
                {
                    "artifactId": f"{run.pk}-result",
                    "name": "result",
                    "parts": [{"data": run.result}],
                }
            ]
    return task


def origin_notify(run: LoopRun) -> None:
    """In the transaction that changed the run: push its task's status to the realm that
    asked for it (once per state: the key says which)."""
    if not run.origin:
        return
    task = task_of(run)
    incoming = Incoming.objects.filter(run_id=run.pk).select_related("peer").first()
    if incoming is None or not incoming.push_url:
        return  # a stock client without a push config polls GetTask
    outbox.queue(
        incoming.peer,
        "push",
        {"url": incoming.push_url, "token": incoming.push_token, "body": {"task": task}},
        key=f"{me().slug}:push:{run.pk}:{run.state}",
        run_id=run.pk,
    )


def frame_cancel(frame: LoopRun) -> None:
    """The frame was cancelled here: the peer cancels the run it started for it (the key
    finds it even if the call's answer, with the task's id, has not come back yet)."""
    remote = frame.remote or {}
    peer = Peer.objects.filter(slug=remote.get("realm"), kind=Peer.Kind.REALM).first()
    if peer is None or remote.get("state") == "rejected":
        return
    key = f"{me().slug}:call:{frame.pk}"
    params = {"id": remote.get("task") or key, "metadata": {EXTENSION: {"key": key}}}
    outbox.queue(peer, "CancelTask", params, key=f"{key}:cancel", run_id=frame.pk)


def halt_follows(halt, runs: list[int], *, lifted: bool, by: str, reason: str) -> None:
    """DESIGN.md H8, in the halt's (or the lift's) transaction: every remote frame among the
    runs it parked (or restored) tells its peer, which halts (or lifts) what the frame's call
    started there, on behalf of this realm. A peer's own halts stay its own."""
    method = "loopstacks/Lift" if lifted else "loopstacks/Halt"
    for frame in LoopRun.objects.filter(pk__in=runs, remote__isnull=False).order_by("pk"):
        remote = frame.remote or {}
        peer = Peer.objects.filter(slug=remote.get("realm"), kind=Peer.Kind.REALM).first()
        if peer is None or remote.get("state") == "rejected":
            continue
        call = f"{me().slug}:call:{frame.pk}"
        params = {
            "key": call,
            "task": remote.get("task", ""),
            "halt": {"id": halt.pk, "realm": me().slug, "by": by, "reason": reason},
        }
        kind = "lift" if lifted else "halt"
        outbox.queue(peer, method, params, key=f"{call}:{kind}:{halt.pk}", run_id=frame.pk)
