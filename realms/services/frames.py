"""The caller's side of a remote frame (DESIGN.md section 8): the peer's task arrives by
the answer to our SendMessage, by its signed push, or by the beat's GetTask; whichever
comes first ends the frame, the others find it ended (idempotent). The frame ends like a
local child: its result, cost and exit return up the stack (loops.services.child_returned).

A frame that is halted or paused holds the peer's result (H8: from a halt's commit on, no
result from the peer moves the stack); the beat asks again once it waits again."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from common.db import retry_deadlocks
from loops.models import LoopRun
from loops.services import child_returned, stack_changed
from loops.trace import Trace
from realms.cards import EXTENSION
from realms.sight import kept

State = LoopRun.State
Reason = LoopRun.ExitReason
# A2A's task states (DESIGN.md section 8's mapping, read back), and how a frame ends.
ENDS: dict[str, tuple[str, str]] = {
    "TASK_STATE_COMPLETED": (State.SUCCEEDED, Reason.QUALITY),
    "TASK_STATE_FAILED": (State.FAILED, Reason.CHILD_FAILED),
    "TASK_STATE_CANCELED": (State.CANCELLED, Reason.CANCELLED),
    "TASK_STATE_REJECTED": (State.FAILED, Reason.ERROR),
}


def open_frames():
    return LoopRun.objects.filter(remote__isnull=False).exclude(state__in=LoopRun.TERMINAL)


@retry_deadlocks
@transaction.atomic(durable=True)
def frame_task(*, frame_id: int, realm: str, task: dict[str, Any]) -> None:
    """The peer's task as it stands now: recorded on the frame; a final state ends it."""
    frame = LoopRun.objects.select_for_update(no_key=True).filter(pk=frame_id).first()
    if frame is None or not frame.remote or frame.remote.get("realm") != realm:
        return  # not a frame of ours in that realm: a push cannot move someone else's run
    if frame.state in LoopRun.TERMINAL:
        return
    state = str(task.get("status", {}).get("state", ""))
    ext = task.get("metadata", {}).get(EXTENSION, {})
    remote = dict(frame.remote)
    remote.update(task=str(task.get("id", remote.get("task", ""))), state=_short(state))
    if ext.get("substate"):
        remote["substate"] = ext["substate"]
    else:
        remote.pop("substate", None)  # paused or halted no more (a lift, a resume)
    remote.update(kept(ext))  # the peer's view of its work, as its grant allows (realms.sight)
    changed = remote != frame.remote
    frame.remote = remote
    trace = Trace(frame.root_id)
    if state in ENDS and frame.state == State.WAITING:
        _end(frame, trace, state, task, ext)
    elif changed:
        frame.updated_at = timezone.now()
        frame.save(update_fields=["remote", "updated_at"])
        stack_changed(frame.domain_id)
    trace.write()


@retry_deadlocks
@transaction.atomic(durable=True)
def frame_refused(*, frame_id: int) -> None:
    """A call refused before it left (this side's grant, a cycle, an unknown peer)."""
    frame = LoopRun.objects.select_for_update(no_key=True).filter(pk=frame_id).first()
    if frame is None or frame.state != State.WAITING or not frame.remote:
        return
    trace = Trace(frame.root_id)
    reason = frame.remote.get("reason", "refused")
    task: dict[str, Any] = {
        "status": {"state": "TASK_STATE_REJECTED"},
        "metadata": {EXTENSION: {"reason": reason}},
    }
    _end(frame, trace, "TASK_STATE_REJECTED", task, task["metadata"][EXTENSION])
    trace.write()


def _end(frame: LoopRun, trace: Trace, state: str, task: dict, ext: dict) -> None:
    to, reason = ENDS[state]
    if to == State.SUCCEEDED and ext.get("state") == State.EXHAUSTED:
        to, reason = State.EXHAUSTED, ext.get("exit_reason", Reason.MAX_ITERATIONS)
    elif to != State.SUCCEEDED and ext.get("exit_reason"):
        reason = ext["exit_reason"] if ext["exit_reason"] in Reason.values else reason
    frame.move_to(to)
    frame.exit_reason = reason
    realm = frame.remote["realm"] if frame.remote else "?"
    frame.exit_detail = (
        f"realm {realm} refused the call: {ext.get('reason', '')}"
        if state == "TASK_STATE_REJECTED"
        else f"realm {realm}: {_short(state)}"
    )
    frame.result = _result(task)
    frame.cost = float(ext.get("cost") or 0)
    frame.finished_at = frame.updated_at = timezone.now()
    frame.save()
    kind = "remote.rejected" if state == "TASK_STATE_REJECTED" else "remote.returned"
    task_id = (frame.remote or {}).get("task")
    trace.add(frame.pk, kind, {"realm": realm, "state": to, "task": task_id})
    trace.add(frame.pk, "run.exited", {"state": to, "exit_reason": reason})
    child_returned(child=frame, trace=trace)
    stack_changed(frame.domain_id)


def _result(task: dict[str, Any]) -> Any:
    """The task's result: the data of its first artifact's first data part."""
    for artifact in task.get("artifacts", []):
        for part in artifact.get("parts", []):
            if "data" in part:
                return part["data"]
            if "text" in part:
                return part["text"]
    return None


def _short(state: str) -> str:
    return state.removeprefix("TASK_STATE_").lower()
