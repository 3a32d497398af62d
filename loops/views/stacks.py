"""The domain page (live stack, activity charts, main runs, pause and resume of the whole
domain) and the run page with its controls and its iterations page by page."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    HttpResponseNotFound,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from common.http import HtmxHttpRequest
from loops import charts, fragments, remotes, selectors, services
from loops.models import (
    Domain,
    LoopRun,
    TransitionRejected,
)

RUN_CONTROLS = "loops/_run_controls.html"
DOMAIN_CONTROLS = "loops/_domain_controls.html"
REFUSED = "console/rejected.html"
REMOTE_VIEW = "loops/_remote_view.html"
REASON_MAX = 500


def _require(request: HttpRequest, perm: str) -> None:
    if not request.user.has_perm(perm):
        raise PermissionDenied


def _get_domain_for_viewer(request: HttpRequest, slug: str) -> Domain:
    _require(request, "loops.view_looprun")
    return get_object_or_404(Domain, slug=slug)


def _get_run_for_operator(request: HttpRequest, run_id: int) -> LoopRun:
    _require(request, "loops.operate_looprun")
    return get_object_or_404(LoopRun.objects.select_related("blueprint"), pk=run_id)


def _get_domain_for_operator(request: HttpRequest, slug: str) -> Domain:
    _require(request, "loops.operate_looprun")
    return get_object_or_404(Domain, slug=slug)


def _can_operate(request: HttpRequest) -> bool:
    return request.user.has_perm("loops.operate_looprun")


@require_GET
@login_required
def domain_detail(request: HttpRequest, slug: str) -> HttpResponse:
    domain = _get_domain_for_viewer(request, slug)
    number = _page_number(request)
    if number is None:
        return HttpResponseBadRequest("The page must be a whole number from 1.")
    can_operate = _can_operate(request)
    ctx = {
        **fragments.domain_stack_context(domain, selectors.stack_frames(domain.pk)),
        "charts": charts.domain_activity(domain.pk),
        "main_runs": selectors.live_main_runs_page(domain.pk, page=number),
        "can_operate": can_operate,
        **(_domain_controls_context(domain) if can_operate else {}),
    }
    return render(request, "loops/domain_detail.html", ctx)


def _domain_controls_context(domain: Domain, changed: list[LoopRun] | None = None) -> dict:
    """What the domain's pause and resume controls show: how many runs each would touch
    (one query), and the main runs a control just changed, whose row controls on the
    page are swapped out of band."""
    counts = LoopRun.objects.filter(domain_id=domain.pk).aggregate(
        pausable=Count("id", filter=Q(state__in=services.DOMAIN_PAUSABLE)),
        resumable=Count(
            "id",
            filter=Q(state=LoopRun.State.PAUSED, paused_by=services.domain_paused_by(domain)),
        ),
    )
    main = [run for run in changed or [] if run.depth == 0][:100]
    return {"domain": domain, **counts, "changed_main_runs": main, "can_operate": True}


def _domain_control(
    request: HtmxHttpRequest, slug: str, service: Callable[..., list[LoopRun]], verb: str
) -> HttpResponse:
    domain = _get_domain_for_operator(request, slug)
    reason = request.POST.get("reason", "").strip()
    if len(reason) > REASON_MAX:
        return HttpResponseBadRequest(f"The reason is longer than {REASON_MAX} characters.")
    changed = service(domain_id=domain.pk, actor=request.user, reason=reason)
    if not request.htmx:
        return redirect("loops:domain", domain.slug)
    response = render(request, DOMAIN_CONTROLS, _domain_controls_context(domain, changed))
    text = f"{len(changed)} run{'s' if len(changed) != 1 else ''} of {domain.name} {verb}."
    return trigger_client_event(response, "console:notice", {"text": text})


@require_POST
@login_required
def domain_pause(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    return _domain_control(request, slug, services.domain_pause, "paused")


@require_POST
@login_required
def domain_resume(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    return _domain_control(request, slug, services.domain_resume, "resumed")


def _page_number(request: HttpRequest) -> int | None:
    """The page asked for (the run page's iterations, the domain page's live main runs):
    None when it is not a whole number from 1 (a 400, H7). A number past the last page is
    the last page (common.pagination.page_clamped, through the selectors)."""
    raw = request.GET.get("page", "1")
    return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) < 10**9 else None


@require_GET
@login_required
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    _require(request, "loops.view_looprun")
    number = _page_number(request)
    if number is None:
        return HttpResponseBadRequest("The page must be a whole number from 1.")
    try:
        page = selectors.run_get_page(run_id, page=number)
    except LoopRun.DoesNotExist:
        raise Http404("No such run.") from None
    ctx = {
        "page": page,
        "run": page.run,
        "iterations": page.iterations,
        "iterations_page": page.page,
        "iterations_pages": page.pages,
        "iterations_first": page.first,
        "iterations_last": page.last,
        "now": timezone.now(),
        "context_json": json.dumps(page.run.context, indent=2, sort_keys=True, default=str),
        "can_operate": _can_operate(request),
        "remote": remotes.remote_view(page.run),  # a remote frame: the peer's view of it
    }
    return render(request, "loops/run_detail.html", ctx)


@require_GET
@login_required
def run_remote(request: HttpRequest, run_id: int) -> HttpResponse:
    """A remote frame's view (the live stack's panel, loops/_remote_view.html): what the
    peer's grant lets this realm see of the work, and the way to the peer's console."""
    _require(request, "loops.view_looprun")
    run = get_object_or_404(LoopRun.objects.select_related("blueprint"), pk=run_id)
    remote = remotes.remote_view(run)
    if remote is None:
        return HttpResponseNotFound(f"Run {run_id} is not a remote frame: it runs here.")
    return render(request, REMOTE_VIEW, {"remote": remote})


def _control(
    request: HtmxHttpRequest, run_id: int, service: Callable[..., LoopRun], notice: str
) -> HttpResponse:
    run = _get_run_for_operator(request, run_id)
    try:
        run = service(run_id=run.pk, actor=request.user)
    except TransitionRejected:
        run.refresh_from_db()
        text = f"Run {run.pk} is {run.state}: it cannot {notice}."
        if not request.htmx:  # a form posted without JavaScript: a 409 page that says why
            back = reverse("loops:run", args=[run.pk])
            return render(request, REFUSED, {"detail": text, "back": back}, status=409)
        response = render(request, RUN_CONTROLS, {"run": run, "can_operate": True})
        return trigger_client_event(response, "console:notice", {"text": text})
    if request.htmx:
        return render(request, RUN_CONTROLS, {"run": run, "can_operate": True})
    return redirect("loops:run", run.pk)


@require_POST
@login_required
def run_pause(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    return _control(request, run_id, services.run_pause, "be paused")


@require_POST
@login_required
def run_resume(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    return _control(request, run_id, services.run_resume, "be resumed")


@require_POST
@login_required
def run_cancel(request: HtmxHttpRequest, run_id: int) -> HttpResponse:
    return _control(request, run_id, services.run_cancel, "be cancelled")


urlpatterns: list[URLPattern] = [
    path("domains/<slug:slug>/", domain_detail, name="domain"),
    path("domains/<slug:slug>/pause", domain_pause, name="domain-pause"),
    path("domains/<slug:slug>/resume", domain_resume, name="domain-resume"),
    path("runs/<int:run_id>/", run_detail, name="run"),
    path("runs/<int:run_id>/remote", run_remote, name="run-remote"),
    path("runs/<int:run_id>/pause", run_pause, name="run-pause"),
    path("runs/<int:run_id>/resume", run_resume, name="run-resume"),
    path("runs/<int:run_id>/cancel", run_cancel, name="run-cancel"),
]
