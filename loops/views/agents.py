"""/loops/agents/: the agent registry with liveness, capabilities, learned success per task
type and recent failures."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET

from loops.selectors import agent_list_with_stats


@require_GET
@login_required
def agent_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("loops.view_agent"):
        raise PermissionDenied
    return render(request, "loops/agents.html", {"rows": agent_list_with_stats()})


urlpatterns: list[URLPattern] = [path("agents/", agent_list, name="agents")]
