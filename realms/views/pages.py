"""/realms/: this realm's identity and its peers (DESIGN.md section 8). Viewers see them;
admins pair with a realm (its URL and the fingerprint its admins read out), approve or
refuse a request, and suspend a peer. Every action goes through the services, which audit
it; a refusal is shown with the service's own sentence."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET, require_POST

from common.refusals import Refused
from realms.identity import me
from realms.schemas import FINGERPRINT
from realms.selectors import peer_rows
from realms.services import peers

PAGE = "realms/realms.html"
VIEW_PERM = "realms.view_peer"
PAIR_PERM = "realms.pair_peer"


class PairForm(forms.Form):
    url = forms.URLField(max_length=300, assume_scheme="https")
    fingerprint = forms.RegexField(regex=FINGERPRINT, max_length=80, strip=True)


def _page(request: HttpRequest, form: PairForm | None = None, status: int = 200) -> HttpResponse:
    context = {"me": me(), "rows": peer_rows(), "form": form or PairForm()}
    return render(request, PAGE, context, status=status)


@require_GET
@login_required
def realm_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(VIEW_PERM):
        raise PermissionDenied
    return _page(request)


@require_POST
@login_required
def realm_pair(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm(PAIR_PERM):
        raise PermissionDenied
    form = PairForm(request.POST)
    if not form.is_valid():
        return _page(request, form, status=400)
    try:
        peer = peers.realm_pair(actor=request.user, **form.cleaned_data)
    except Refused as exc:
        form.add_error(None, exc.detail)
        return _page(request, form, status=exc.status)
    messages.success(request, f"Asked {peer.slug} to pair; its admins must approve.")
    return redirect("realms:list")


def _act(request: HttpRequest, slug: str, action, **extra) -> HttpResponse:
    if not request.user.has_perm(PAIR_PERM):
        raise PermissionDenied
    try:
        peer = action(actor=request.user, slug=slug, **extra)
    except Refused as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"{peer.slug}: {peer.status}.")
    return redirect("realms:list")


@require_POST
@login_required
def realm_approve(request: HttpRequest, slug: str) -> HttpResponse:
    return _act(request, slug, peers.realm_approve)


@require_POST
@login_required
def realm_refuse(request: HttpRequest, slug: str) -> HttpResponse:
    return _act(request, slug, peers.realm_refuse)


@require_POST
@login_required
def realm_suspend(request: HttpRequest, slug: str) -> HttpResponse:
    reason = str(request.POST.get("reason", ""))[:2000]
    return _act(request, slug, peers.realm_suspend, reason=reason)


urlpatterns: list[URLPattern] = [
    path("", realm_list, name="list"),
    path("pair", realm_pair, name="pair"),
    path("<slug:slug>/approve", realm_approve, name="approve"),
    path("<slug:slug>/refuse", realm_refuse, name="refuse"),
    path("<slug:slug>/suspend", realm_suspend, name="suspend"),
]
