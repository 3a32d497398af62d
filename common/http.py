"""The request type of views that answer htmx (django-htmx's typing tip): HtmxMiddleware sets
`request.htmx` on every request, so a view that reads it says so in its signature."""

from __future__ import annotations

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails
