"""/oversight/halts/: engage a halt after a confirmation naming its scope, and lift one
(DESIGN.md H1). The services decide; these views check roles and pick the response."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common.http import HtmxHttpRequest
from common.refusals import Refused
from oversight import fragments
from oversight.models import Halt
from oversight.selectors import active_halts, halt_in_flight_count, halt_reach
from oversight.services.halts import halt_engage, halt_lift, halt_scope_parse, may_engage

NEW = "oversight/halt_new.html"
LIFT = "oversight/halt_lift.html"


class HaltForm(forms.Form):
    scope = forms.CharField(max_length=120, widget=forms.HiddenInput)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), strip=True)


class LiftForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), strip=True)


def _get_halt_for_admin(request: HttpRequest, pk: int) -> Halt | None:
    """The halt (404 if none), or None when the user may not lift halts."""
    halt = get_object_or_404(Halt.objects.select_related("created_by", "lift_requested_by"), pk=pk)
    return halt if request.user.has_perm("oversight.lift_halt") else None


def _forbidden(request: HttpRequest) -> HttpResponse:
    return render(request, "console/no_role.html", status=403)


@require_GET
@login_required
def halt_new(request: HttpRequest) -> HttpResponse:
    scope = request.GET.get("scope", "")
    if not may_engage(request.user, scope):
        return _forbidden(request)
    context = {"form": HaltForm(initial={"scope": scope}), "scope": scope}
    return render(request, NEW, {**context, "reach": _reach(scope)})


def _reach(scope: str) -> dict[str, int]:
    """The peer realms the halt would reach, for the confirmation; none for a bad scope,
    which the form refuses when it is sent."""
    try:
        return halt_reach(*halt_scope_parse(scope))
    except Refused:
        return {}


@require_POST
@login_required
def halt_engage_view(request: HtmxHttpRequest) -> HttpResponse:
    form = HaltForm(request.POST)
    scope = request.POST.get("scope", "")
    if not may_engage(request.user, scope):
        return _forbidden(request)
    if not form.is_valid():
        return render(request, NEW, {"form": form, "scope": scope}, status=400)
    try:
        halt_engage(actor=request.user, scope=scope, reason=form.cleaned_data["reason"])
    except Refused as exc:
        form.add_error(None, exc.detail)
        return render(request, NEW, {"form": form, "scope": scope}, status=exc.status)
    if request.htmx:
        return render(request, fragments.HALT_BANNER, {"halts": active_halts()})
    return redirect("console:dashboard")


@require_http_methods(["GET", "POST"])
@login_required
def halt_lift_view(request: HttpRequest, pk: int) -> HttpResponse:
    halt = _get_halt_for_admin(request, pk)
    if halt is None:
        return _forbidden(request)
    form = LiftForm(request.POST if request.method == "POST" else None)
    ctx = {"halt": halt, "form": form, "in_flight": halt_in_flight_count(halt)}
    if request.method == "GET" or not form.is_valid():
        return render(request, LIFT, ctx, status=400 if form.is_bound else 200)
    try:
        halt = halt_lift(halt_id=halt.pk, actor=request.user, reason=form.cleaned_data["reason"])
    except Refused as exc:
        form.add_error(None, exc.detail)
        return render(request, LIFT, ctx, status=exc.status)
    if halt.is_active:  # a global halt: the first admin asked, a second one must confirm
        return render(request, LIFT, {**ctx, "halt": halt, "form": LiftForm(), "awaiting": True})
    return redirect("console:dashboard")


urlpatterns: list[URLPattern] = [
    path("halts/new", halt_new, name="halt-new"),
    path("halts/", halt_engage_view, name="halt-engage"),
    path("halts/<int:pk>/lift", halt_lift_view, name="halt-lift"),
]
