"""/oversight/interrupts/<id>/: one decision, made readable (issue 17).

The page shows the interrupt's card (the shared, pushed fragment) with its controls (the
inbox's own _inbox_controls.html, posting to oversight:interrupt-decide), the run's whole
stack with this frame highlighted, and the recent history of the same task (blueprint and
phase) and of the same agent. Viewers read it; only oversight.decide_interrupt decides,
and the decide view checks that again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.decorators import login_required
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.views.decorators.http import require_GET

from loops.models import Agent, Contribution, LoopRun
from oversight import selectors
from oversight.models import Interrupt

VIEW = "oversight.view_interrupt"
STACK_CAP = 200  # frames listed; a deeper or wider stack says how many were left out
HISTORY_ROWS = 5


@dataclass
class Frame:
    run: LoopRun
    current: bool
    children: list[Frame] = field(default_factory=list)


@require_GET
@login_required
def interrupt_detail(request: HttpRequest, pk: int) -> HttpResponse:
    if not request.user.has_perm(VIEW):
        return render(request, "console/no_role.html", status=403)
    interrupt = get_object_or_404(
        selectors.interrupts_with_history().select_related("run__blueprint", "agent", "iteration"),
        pk=pk,
    )
    stack, left_out = _stack(interrupt.run)
    agents = _agents_of(interrupt)
    ctx = {
        "interrupt": interrupt,
        "stack": stack,
        "stack_left_out": left_out,
        "agents": agents,
        "task_history": _task_history(interrupt),
        "agent_history": _agent_history(interrupt, agents),
        "on_reject": _on_reject(interrupt.run),
    }
    return render(request, "oversight/interrupt_detail.html", ctx)


# --- Reads (bounded: one query each) ---------------------------------------------------------


def _stack(run: LoopRun) -> tuple[list[Frame], int]:
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


def _agents_of(interrupt: Interrupt) -> list[Agent]:
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


def _earlier(interrupt: Interrupt):
    return (
        Interrupt.objects.exclude(pk=interrupt.pk)
        .select_related("decided_by", "run")
        .order_by("-created_at", "-id")
    )


def _task_history(interrupt: Interrupt) -> list[Interrupt]:
    """Earlier interrupts of the same blueprint and phase (newest first, a few)."""
    same = _earlier(interrupt).filter(run__blueprint_id=interrupt.run.blueprint_id)
    if interrupt.iteration_id and interrupt.iteration:
        same = same.filter(iteration__phase=interrupt.iteration.phase)
    return list(same[:HISTORY_ROWS])


def _agent_history(interrupt: Interrupt, agents: list[Agent]) -> list[Interrupt]:
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


def _on_reject(run: LoopRun) -> str:
    """The blueprint's own words for what it does after a rejection (Escalate.on_reject)."""
    policy = (run.blueprint.spec or {}).get("policy") or {}
    return str((policy.get("escalation") or {}).get("on_reject") or "")


urlpatterns = [path("interrupts/<int:pk>/", interrupt_detail, name="interrupt-detail")]
