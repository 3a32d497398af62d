from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.http import require_GET

from oversight.selectors import domain_cards, overview_totals


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("loops.view_looprun"):
        return render(request, "console/no_role.html", status=403)
    cards = domain_cards()
    return render(
        request, "console/dashboard.html", {"domains": cards, "totals": overview_totals(cards)}
    )


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 page, but JSON of the contract's shape under /api/: a path no API call
    matches (/api/v1/runs/abc: ids are integers) is still an API client's error to read."""
    if request.path.startswith("/api/"):
        detail = f"No API call matches {request.method} {request.path}."
        return JsonResponse({"error": "not_found", "detail": detail}, status=404)
    return defaults.page_not_found(request, exception)
