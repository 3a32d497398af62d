from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from oversight.overview import domain_cards, overview_totals


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("loops.view_looprun"):
        return render(request, "console/no_role.html", status=403)
    cards = domain_cards()
    return render(
        request, "console/dashboard.html", {"domains": cards, "totals": overview_totals(cards)}
    )
