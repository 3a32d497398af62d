"""Remote frames as the caller draws them (DESIGN.md section 8): their state as drawn,
and what the peer lets this realm see of the work (its view, realms.sight, kept in the
frame's `remote` by realms.services.frames) with the way to the peer's own console."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.urls import reverse

from loops.models import LoopRun
from realms.models import Peer

# What the live stack reads of a remote frame's `remote` (its view may be long): the
# annotation's name, the key's path.
REMOTE_KEYS = {
    "remote_realm": "remote__realm",
    "remote_blueprint": "remote__blueprint",
    "remote_state": "remote__state",
    "remote_substate": "remote__substate",
    "remote_run_state": "remote__view__state",  # the peer's run itself, as its view says
}


def remote_state(
    state: str, there: str | None, substate: str | None, run_state: str | None, unreachable: bool
) -> str:
    """A remote frame's state as drawn: unreachable while its peer cannot be reached (H10);
    halted or paused here, the frame's own (a halt holds the peer's answers, H8); else the
    peer's run's own state where its view says it, or the task's (`there`, A2A's, which
    says working for paused and halted, with a substate)."""
    if unreachable:
        return "unreachable"
    if state in (LoopRun.State.HALTED, LoopRun.State.PAUSED):
        return state
    return run_state or substate or there or ""


@dataclass
class RemoteView:
    """A remote frame as the caller sees it: the peer's view of the work (realms.sight, as
    the peer's grant allows: summary or full) and where the peer's console shows it."""

    frame: LoopRun
    realm: str
    blueprint: str
    state: str
    task: str
    peer_url: str  # the peer's console ("" if it is no peer of ours now)
    peer_run_url: str  # the run the call started there ("" until the peer answered)
    view: dict[str, Any] | None


def remote_view(frame: LoopRun) -> RemoteView | None:
    """The frame's remote view (one query), or None for a run of this realm's own."""
    remote = frame.remote
    if not remote:
        return None
    realm = str(remote.get("realm", ""))
    peer = Peer.objects.filter(slug=realm).only("url", "reachable").first()
    base = peer.url.rstrip("/") if peer is not None else ""
    task = str(remote.get("task") or "")
    run_path = reverse("loops:run", args=[int(task)]) if task.isdigit() else ""
    unreachable = peer is not None and not peer.reachable
    return RemoteView(
        frame=frame,
        realm=realm,
        blueprint=str(remote.get("blueprint", "")),
        state=remote_state(
            frame.state,
            remote.get("state"),
            remote.get("substate"),
            (remote.get("view") or {}).get("state"),
            unreachable,
        ),
        task=task,
        peer_url=base,
        peer_run_url=f"{base}{run_path}" if base and run_path else "",
        view=remote.get("view") if isinstance(remote.get("view"), dict) else None,
    )
