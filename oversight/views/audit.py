"""/oversight/audit/: the audit log, newest first, filtered by who, what, scope and time."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import URLPattern, path
from django.views.decorators.http import require_GET

from common.pagination import page_clamped
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
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return render(request, "oversight/audit.html", {"form": form}, status=400)
    rows = audit_filter(**form.cleaned_data)
    page = page_clamped(rows, request.GET.get("page"), per_page=PER_PAGE)
    query = request.GET.copy()
    query.pop("page", None)
    return render(
        request, "oversight/audit.html", {"form": form, "page": page, "query": query.urlencode()}
    )


urlpatterns: list[URLPattern] = [path("audit/", audit_list, name="audit")]
