"""Which runs a halt covers (reads only): the halt service parks and restores them, the
selectors count the calls they hold in flight."""

from __future__ import annotations

from loops.models import LoopRun
from loops.subtree import subtree_ids
from oversight.models import Halt

State = LoopRun.State
# What a halt parks: every state from which a run may move to halted (LoopRun.TRANSITIONS).
PARKABLE = sorted(s for s, moves in LoopRun.TRANSITIONS.items() if State.HALTED in moves)


def halt_scope_ids(halt: Halt) -> set[int]:
    """The runs in the halt's scope: for a run halt its whole subtree; for a domain or a
    global halt, those of its runs that are halted now."""
    if halt.kind == Halt.Kind.RUN:
        return set(subtree_ids(halt.run_id))
    runs = LoopRun.objects.filter(state=State.HALTED)
    if halt.kind == Halt.Kind.DOMAIN:
        runs = runs.filter(domain=halt.domain)
    return set(runs.values_list("pk", flat=True))
