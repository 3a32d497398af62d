"""/oversight/interrupts/<id>/: one decision, made readable (issue 17).

The page shows the interrupt's card (the shared, pushed fragment) with its controls (the
inbox's own _inbox_controls.html, posting to oversight:interrupt-decide), the run's whole
stack with this frame highlighted, and the recent history of the same task (blueprint and
phase) and of the same agent. Viewers read it; only oversight.decide_interrupt decides,
and the decide view checks that again.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path
from django.views.decorators.http import require_GET

from oversight import decision_reads as reads
from oversight import selectors

VIEW = "oversight.view_interrupt"


@require_GET
@login_required
def interrupt_detail(request: HttpRequest, pk: int) -> HttpResponse:
    if not request.user.has_perm(VIEW):
        return render(request, "console/no_role.html", status=403)
    interrupt = get_object_or_404(
        selectors.interrupts_with_history().select_related("run__blueprint", "agent", "iteration"),
        pk=pk,
    )
    stack, left_out = reads.decision_stack(interrupt.run)
    agents = reads.decision_agents(interrupt)
    ctx = {
        "interrupt": interrupt,
        "stack": stack,
        "stack_left_out": left_out,
        "agents": agents,
        "task_history": reads.task_history(interrupt),
        "agent_history": reads.agent_history(interrupt, agents),
        "on_reject": reads.on_reject_words(interrupt.run),
    }
    return render(request, "oversight/interrupt_detail.html", ctx)


urlpatterns = [path("interrupts/<int:pk>/", interrupt_detail, name="interrupt-detail")]
