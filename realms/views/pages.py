"""/realms/: this realm's identity and its peers (DESIGN.md section 8). Viewers see them,
live (the topic "realms": realms.fragments pushes the peers after every change of a peer,
a grant, a reachability or a breaker); admins pair with a realm (its URL and the
fingerprint its admins read out), approve or refuse a request, and suspend a peer. Every
action goes through the services, which audit it; a refusal is shown with the service's
own sentence."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from common.http import HtmxHttpRequest
from common.refusals import Refused
from realms import fragments
from realms.identity import me
from realms.schemas import FINGERPRINT
from realms.services import peers

PAGE = "realms/realms.html"
PEERS = fragments.REALM_PEERS  # the peers' partial: the page's, an htmx answer's, a push's
REFUSED = "console/rejected.html"
REASON_MAX = 2000
VIEW_PERM = "realms.view_peer"
PAIR_PERM = "realms.pair_peer"


class PairForm(forms.Form):
    url = forms.URLField(max_length=300, assume_scheme="https")
    fingerprint = forms.RegexField(regex=FINGERPRINT, max_length=80, strip=True)


def _page(request: HttpRequest, form: PairForm | None = None, status: int = 200) -> HttpResponse:
    context = {"me": me(), **fragments.peers_context(), "form": form or PairForm()}
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


def _act(request: HtmxHttpRequest, slug: str, action, **extra) -> HttpResponse:
    """One admin action on a peer. htmx (the page's buttons) gets the peers' fragment and a
    notice, a refused move included (STYLE.md B.5: the current state, 200); a form posted
    without htmx gets the page again with a message. An unknown peer is a 404."""
    if not request.user.has_perm(PAIR_PERM):
        raise PermissionDenied
    try:
        peer = action(actor=request.user, slug=slug, **extra)
    except Refused as exc:
        if exc.status == 404:
            back = reverse("realms:list")
            return render(request, REFUSED, {"detail": exc.detail, "back": back}, status=404)
        text = exc.detail
    else:
        text = f"{peer.slug}: {peer.status}."
    if not request.htmx:
        messages.info(request, text)
        return redirect("realms:list")
    response = render(request, PEERS, fragments.peers_context())
    return trigger_client_event(response, "console:notice", {"text": text})


@require_POST
@login_required
def realm_approve(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    return _act(request, slug, peers.realm_approve)


@require_POST
@login_required
def realm_refuse(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    return _act(request, slug, peers.realm_refuse)


@require_POST
@login_required
def realm_suspend(request: HtmxHttpRequest, slug: str) -> HttpResponse:
    reason = str(request.POST.get("reason", "")).strip()
    if len(reason) > REASON_MAX:
        return HttpResponseBadRequest(f"The reason is longer than {REASON_MAX} characters.")
    return _act(request, slug, peers.realm_suspend, reason=reason)


urlpatterns: list[URLPattern] = [
    path("", realm_list, name="list"),
    path("pair", realm_pair, name="pair"),
    path("<slug:slug>/approve", realm_approve, name="approve"),
    path("<slug:slug>/refuse", realm_refuse, name="refuse"),
    path("<slug:slug>/suspend", realm_suspend, name="suspend"),
]
