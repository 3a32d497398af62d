"""POST /oversight/alerts/<pk>/acknowledge: an operator takes an alert out of the live feed.

The button sits in the pushed alert fragment, the same for everyone (CSS shows it only under
body.can-ack); this view is where the permission is checked (STYLE.md B.7).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, path
from django.views.decorators.http import require_POST
from django_htmx.http import trigger_client_event

from common.http import HtmxHttpRequest
from common.refusals import Refused
from oversight import fragments
from oversight.services.alerts import alert_acknowledge

ACKNOWLEDGE = "oversight.acknowledge_alert"
NOTE_MAX = 2000


@require_POST
@login_required
def alert_acknowledge_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    if not request.user.has_perm(ACKNOWLEDGE):
        return render(request, "console/no_role.html", status=403)
    note = request.POST.get("note", "").strip()[:NOTE_MAX]
    try:
        alert_acknowledge(alert_id=pk, actor=request.user, note=note)
    except Refused as exc:
        if exc.status == 404:
            raise Http404(exc.detail) from exc
        return _too_late(request, pk, exc)
    if not request.htmx:
        return redirect("console:dashboard")
    return render(request, fragments.ALERT_GONE, {"alert_id": pk})


def _too_late(request: HtmxHttpRequest, pk: int, exc: Refused) -> HttpResponse:
    """Someone else acknowledged it first. htmx 2 does not swap a 4xx, so htmx hears 200 with
    the notice in the alert's place (as the inbox answers a lost race); others hear 409."""
    if not request.htmx:
        return HttpResponse(exc.detail, status=409, content_type="text/plain; charset=utf-8")
    response = render(request, fragments.ALERT_GONE, {"alert_id": pk, "notice": exc.detail})
    return trigger_client_event(response, "console:notice", {"text": exc.detail, "code": exc.code})


urlpatterns: list[URLPattern] = [
    path("alerts/<int:pk>/acknowledge", alert_acknowledge_view, name="alert-acknowledge"),
]
