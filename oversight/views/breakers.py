"""/oversight/breakers/: every breaker with its metric chart and trip history; operators
reset or force one open, with a reason (DESIGN.md H3)."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from common.http import HtmxHttpRequest
from common.refusals import Refused
from oversight.models import CircuitBreaker
from oversight.selectors import breaker_get_with_history, breaker_list_with_history
from oversight.services.breakers import breaker_force_open, breaker_reset

PAGE = "oversight/breakers.html"
BODY = PAGE + "#breaker-body"
VIEW_PERM = "oversight.view_circuitbreaker"
RESET_PERM = "oversight.reset_circuitbreaker"


class ReasonForm(forms.Form):
    reason = forms.CharField(max_length=2000, widget=forms.TextInput, strip=True)


def _get_breaker_for_operator(request: HttpRequest, breaker_id: int) -> CircuitBreaker:
    if not request.user.has_perm(RESET_PERM):
        raise PermissionDenied
    return get_object_or_404(CircuitBreaker, pk=breaker_id)


@require_GET
@login_required
def breaker_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERM):
        raise PermissionDenied
    return render(request, PAGE, {"items": breaker_list_with_history()})


def _act(request: HtmxHttpRequest, breaker_id: int, action, field: str) -> HttpResponse:
    breaker = _get_breaker_for_operator(request, breaker_id)
    form = ReasonForm(request.POST)
    if not form.is_valid():
        item = breaker_get_with_history(breaker.pk)
        setattr(item, field, form)
        return render(request, BODY, {"item": item}, status=200 if request.htmx else 400)
    try:
        action(breaker_id=breaker.pk, actor=request.user, reason=form.cleaned_data["reason"])
    except Refused as exc:
        if not request.htmx:
            return redirect("oversight:breakers")
        response = render(request, BODY, {"item": breaker_get_with_history(breaker.pk)})
        return trigger_client_event(response, "console:notice", {"text": exc.detail})
    if request.htmx:
        return render(request, BODY, {"item": breaker_get_with_history(breaker.pk)})
    return redirect("oversight:breakers")


@require_POST
@login_required
def breaker_reset_view(request: HtmxHttpRequest, breaker_id: int) -> HttpResponse:
    return _act(request, breaker_id, breaker_reset, "reset_form")


@require_POST
@login_required
def breaker_force_open_view(request: HtmxHttpRequest, breaker_id: int) -> HttpResponse:
    return _act(request, breaker_id, breaker_force_open, "force_form")


urlpatterns: list[URLPattern] = [
    path("breakers/", breaker_list, name="breakers"),
    path("breakers/<int:breaker_id>/reset", breaker_reset_view, name="breaker-reset"),
    path(
        "breakers/<int:breaker_id>/force-open", breaker_force_open_view, name="breaker-force-open"
    ),
]
