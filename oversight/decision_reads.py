"""The reads of a decision's page (oversight/views/decision.py, issue 17): the run's whole
stack with this frame marked, whose proposal it is, and the recent history of the same task
and of the same agents. Each is one bounded query."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Q, QuerySet

from loops.models import Agent, Contribution, LoopRun
from oversight.models import Interrupt

STACK_CAP = 200  # frames listed; a deeper or wider stack says how many were left out
HISTORY_ROWS = 5


@dataclass
class Frame:
    run: LoopRun
    current: bool
    children: list[Frame] = field(default_factory=list)


def decision_stack(run: LoopRun) -> tuple[list[Frame], int]:
    """The root's frames as a tree (one query, at most STACK_CAP frames, oldest first), with
    this run's frame marked; and how many frames were left out."""
    root_id = run.root_id or run.pk
    frames = list(
        LoopRun.objects.filter(Q(pk=root_id) | Q(root_id=root_id))
        .select_related("blueprint")
        .only("id", "parent_id", "root_id", "state", "depth", "blueprint__name", "blueprint__kind")
        .order_by("depth", "id")[: STACK_CAP + 1]
    )
    left_out = max(0, len(frames) - STACK_CAP)
    nodes = {f.pk: Frame(f, f.pk == run.pk) for f in frames[:STACK_CAP]}
    roots: list[Frame] = []
    for node in nodes.values():
        parent = nodes.get(node.run.parent_id) if node.run.parent_id else None
        (parent.children if parent else roots).append(node)
    return roots, left_out


def decision_agents(interrupt: Interrupt) -> list[Agent]:
    """Whose proposal it is: the agent that asked, or, for a policy's interrupt, the agents
    whose contributions the iteration merged."""
    if interrupt.agent_id:
        return [interrupt.agent] if interrupt.agent else []
    if not interrupt.iteration_id:
        return []
    made = Contribution.objects.filter(
        iteration_id=interrupt.iteration_id, status=Contribution.Status.COMPLETED
    ).select_related("agent")[:HISTORY_ROWS]
    return [c.agent for c in made]


def _earlier(interrupt: Interrupt) -> QuerySet[Interrupt]:
    return (
        Interrupt.objects.exclude(pk=interrupt.pk)
        .select_related("decided_by", "run")
        .order_by("-created_at", "-id")
    )


def task_history(interrupt: Interrupt) -> list[Interrupt]:
    """Earlier interrupts of the same blueprint and phase (newest first, a few)."""
    same = _earlier(interrupt).filter(run__blueprint_id=interrupt.run.blueprint_id)
    if interrupt.iteration_id and interrupt.iteration:
        same = same.filter(iteration__phase=interrupt.iteration.phase)
    return list(same[:HISTORY_ROWS])


def agent_history(interrupt: Interrupt, agents: list[Agent]) -> list[Interrupt]:
    """Earlier interrupts the same agents asked for or whose proposals they made."""
    if not agents:
        return []
    ids = [a.pk for a in agents]
    made = Contribution.objects.filter(
        agent_id__in=ids, status=Contribution.Status.COMPLETED
    ).values("iteration_id")
    return list(
        _earlier(interrupt).filter(Q(agent_id__in=ids) | Q(iteration_id__in=made))[:HISTORY_ROWS]
    )


def on_reject_words(run: LoopRun) -> str:
    """The blueprint's own words for what it does after a rejection (Escalate.on_reject)."""
    policy = (run.blueprint.spec or {}).get("policy") or {}
    return str((policy.get("escalation") or {}).get("on_reject") or "")
