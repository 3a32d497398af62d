"""What a caller may see of the work it asked for (DESIGN.md section 8, "how much of the
trace the caller may see"): the callee's inbound grant says summary or full, and the
callee alone decides, so the view travels inside the task it pushes or answers.

In the callee, view_of(run) builds it for a root run a peer asked for: summary is the
run's state, iteration count, cost and exit reason, and the frames below it (blueprint and
state); full adds the run tree's last trace events. In the caller, kept(ext) takes the
view from a peer's task, bounded and typed (the peer is trusted with its own data, not
with our database's size), for the frame's `remote["view"]`.

A leaf over the models, like realms.frames, which calls it."""

from __future__ import annotations

import json
from typing import Any

from loops.models import Event, LoopRun
from realms.models import Grant, Incoming

FRAMES = 50  # frames below the root a view lists
EVENTS = 50  # trace events a full view carries, the latest
PAYLOAD_CHARS = 300  # an event's payload, as text, at most


def view_of(run: LoopRun) -> dict[str, Any] | None:
    """The view the inbound grant of the peer that asked for `run` allows it; None for
    work this realm started itself (or a frame below the root: the root's view covers it)."""
    if run.parent_id is not None or not run.origin:
        return None
    incoming = Incoming.objects.filter(run_id=run.pk).only("peer_id").first()
    if incoming is None:
        return None
    grant = Grant.objects.filter(
        peer_id=incoming.peer_id, direction=Grant.Direction.INBOUND
    ).first()
    level = grant.trace if grant is not None else Grant.Trace.SUMMARY
    frames = (
        LoopRun.objects.filter(root_id=run.pk)
        .exclude(pk=run.pk)
        .select_related("blueprint")
        .only("id", "depth", "state", "remote", "blueprint__name")
        .order_by("depth", "id")[:FRAMES]
    )
    view: dict[str, Any] = {
        "trace": str(level),
        "state": run.state,
        "iteration": run.iteration,
        "cost": run.cost,
        "exit_reason": run.exit_reason,
        "frames": [_frame(f, run.depth) for f in frames],
    }
    if level == Grant.Trace.FULL:
        latest = Event.objects.filter(root_id=run.pk).order_by("-seq")[:EVENTS]
        view["events"] = [_event(e) for e in reversed(latest)]
    return view


def _frame(frame: LoopRun, below: int) -> dict[str, Any]:
    shown = {"blueprint": frame.blueprint.name, "state": frame.state, "depth": frame.depth - below}
    if frame.remote:  # a frame of ours in a further realm: its state there
        shown["realm"] = str(frame.remote.get("realm", ""))
        shown["remote_state"] = str(frame.remote.get("state", ""))
    return shown


def _event(event: Event) -> dict[str, Any]:
    payload = json.dumps(event.payload, separators=(",", ":"), default=str)
    return {
        "seq": event.seq,
        "run": event.run_id,
        "type": event.type,
        "ts": event.ts.isoformat(),
        "payload": payload[:PAYLOAD_CHARS],
    }


# --- The caller's side: a peer's view, bounded and typed ----------------------------------


def kept(ext: Any) -> dict[str, Any]:
    """{"view": …} to merge into a frame's `remote`, from the federation metadata of the
    peer's task; {} when it carries none (an older peer, a stock A2A agent)."""
    view = ext.get("view") if isinstance(ext, dict) else None
    if not isinstance(view, dict):
        return {}
    full = view.get("trace") == Grant.Trace.FULL
    kept_view: dict[str, Any] = {
        "trace": Grant.Trace.FULL if full else Grant.Trace.SUMMARY,
        "state": _text(view.get("state"), 16),
        "iteration": _number(view.get("iteration"), int),
        "cost": _number(view.get("cost"), float),
        "exit_reason": _text(view.get("exit_reason"), 24),
        "frames": [_kept_frame(f) for f in _items(view.get("frames"), FRAMES)],
    }
    if full:
        kept_view["events"] = [_kept_event(e) for e in _items(view.get("events"), EVENTS)]
    return {"view": kept_view}


def _items(value: Any, cap: int) -> list[dict[str, Any]]:
    return [v for v in value[:cap] if isinstance(v, dict)] if isinstance(value, list) else []


def _kept_frame(frame: dict[str, Any]) -> dict[str, Any]:
    return {
        "blueprint": _text(frame.get("blueprint"), 120),
        "state": _text(frame.get("state"), 16),
        "depth": _number(frame.get("depth"), int),
        "realm": _text(frame.get("realm"), 60),
        "remote_state": _text(frame.get("remote_state"), 24),
    }


def _kept_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "seq": _number(event.get("seq"), int),
        "run": _number(event.get("run"), int),
        "type": _text(event.get("type"), 40),
        "ts": _text(event.get("ts"), 40),
        "payload": _text(event.get("payload"), PAYLOAD_CHARS),
    }


def _text(value: Any, cap: int) -> str:
    return value[:cap] if isinstance(value, str) else ""


def _number(value: Any, kind: type) -> Any:
    """An int or float as sent (a bool is not a number here), else 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return kind(0)
    return kind(value) if abs(value) < 1e15 else kind(0)
