"""The domain page (live stack, throughput, main runs) and the run page with its controls."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event
from django_htmx.middleware import HtmxDetails

from loops import charts, fragments, selectors, services
from loops.models import Domain, LoopRun, TransitionRejected

RUN_CONTROLS = "loops/_run_controls.html"


class HtmxRequest(HttpRequest):
    htmx: HtmxDetails


def _require(request: HttpRequest, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


def _get_domain_for_viewer(request: HttpRequest, slug: str) -> Domain:
    _require(request, "loops.view_looprun")
    return get_object_or_404(Domain, slug=slug)


def _get_run_for_operator(request: HttpRequest, run_id: int) -> LoopRun:
    _require(request, "loops.operate_looprun")
    return get_object_or_404(LoopRun.objects.select_related("blueprint"), pk=run_id)


def _can_operate(request: HttpRequest) -> bool:
    return request.user.has_perm("loops.operate_looprun")


@require_GET
@login_required
def domain_detail(request: HttpRequest, slug: str) -> HttpResponse:
    domain = _get_domain_for_viewer(request, slug)
    ctx = {
        **fragments.domain_stack_context(domain),
        "throughput_chart": charts.throughput(domain.pk),
        "main_runs": selectors.run_list(domain=slug, states=LoopRun.LIVE).filter(depth=0)[:100],
        "can_operate": _can_operate(request),
    }
    return render(request, "loops/domain_detail.html", ctx)


@require_GET
@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    _require(request, "loops.view_looprun")
    try:
        page = selectors.run_get_page(run_id)
    except LoopRun.DoesNotExist:
        raise Http404("No such run.") from None
    ctx = {
        "page": page,
        "run": page.run,
        "now": timezone.now(),
        "context_json": json.dumps(page.run.context, indent=2, sort_keys=True, default=str),
        "can_operate": _can_operate(request),
    }
    return render(request, "loops/run_detail.html", ctx)


def _control(
    request: HtmxRequest, run_id: int, service: Callable[..., LoopRun], notice: str
) -> HttpResponse:
    run = _get_run_for_operator(request, run_id)
    try:
        run = service(run_id=run.pk, actor=request.user)
    except TransitionRejected:
        run.refresh_from_db()
        if not request.htmx:
            return redirect("loops:run", run.pk)
        response = render(request, RUN_CONTROLS, {"run": run, "can_operate": True})
        text = f"Run {run.pk} is {run.state}: it cannot {notice}."
        return trigger_client_event(response, "console:notice", {"text": text})
    if request.htmx:
        return render(request, RUN_CONTROLS, {"run": run, "can_operate": True})
    return redirect("loops:run", run.pk)


@require_POST
@login_required
def run_pause(request: HtmxRequest, run_id: int) -> HttpResponse:
    return _control(request, run_id, services.run_pause, "be paused")


@require_POST
@login_required
def run_resume(request: HtmxRequest, run_id: int) -> HttpResponse:
    return _control(request, run_id, services.run_resume, "be resumed")


@require_POST
@login_required
def run_cancel(request: HtmxRequest, run_id: int) -> HttpResponse:
    return _control(request, run_id, services.run_cancel, "be cancelled")


urlpatterns: list[URLPattern] = [
    path("domains/<slug:slug>/", domain_detail, name="domain"),
    path("runs/<int:run_id>/", run_detail, name="run"),
    path("runs/<int:run_id>/pause", run_pause, name="run-pause"),
    path("runs/<int:run_id>/resume", run_resume, name="run-resume"),
    path("runs/<int:run_id>/cancel", run_cancel, name="run-cancel"),
]
