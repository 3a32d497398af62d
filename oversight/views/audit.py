"""/oversight/audit/: the audit log, newest first, filtered by who, what, scope and time; and
the state of its hash chain (issue 18): how many rows are sealed and how many wait for their
seal, and for admins, on asking (it reads every row), the chain checked from its start."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET

from common.pagination import page_clamped
from oversight.chain import audit_awaiting_seal, audit_sealed_count, audit_verify
from oversight.selectors import audit_filter

PER_PAGE = 50


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=150, label="Who")
    verb = forms.CharField(
        required=False, max_length=40, label="What", help_text="a verb or a prefix: halt."
    )
    target_type = forms.CharField(required=False, max_length=20, label="Scope type")
    target_id = forms.CharField(required=False, max_length=40, label="Scope id")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict:
        super().clean()
        data = self.cleaned_data
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise forms.ValidationError("“Since” must not be after “until”.")
        return data


@require_GET
@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("oversight.view_auditevent"):
        raise PermissionDenied
    chain = _chain(request)
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return render(request, "oversight/audit.html", {"form": form, **chain}, status=400)
    rows = audit_filter(**form.cleaned_data)
    page = page_clamped(rows, request.GET.get("page"), per_page=PER_PAGE)
    query = request.GET.copy()
    query.pop("page", None)
    query.pop("verify", None)
    context = {"form": form, "page": page, "query": query.urlencode(), **chain}
    return render(request, "oversight/audit.html", context)


def _chain(request: HttpRequest) -> dict:
    """The chain's counts for everyone who sees the log; the full check (?verify=1) only for
    those allowed it (admins), as it reads every row: anyone else asking gets 403."""
    can_verify = request.user.has_perm("oversight.verify_auditevent")
    asked = "verify" in request.GET
    if asked and not can_verify:
        raise PermissionDenied("Checking the whole chain needs the admin role.")
    return {
        "chain_sealed": audit_sealed_count(),
        "chain_awaiting": audit_awaiting_seal(),
        "chain_report": audit_verify() if asked else None,
        "can_verify": can_verify,
    }


urlpatterns: list[URLPattern] = [path("audit/", audit_list, name="audit")]
