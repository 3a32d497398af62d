"""Refuse NUL characters at the door (H7): PostgreSQL cannot store them in text or jsonb, so
one in a path, query, form or JSON body reached the database as a 500 (found by
tests/security/test_fuzz.py). Django's form fields refuse them already; the API's schemas,
the URL converters and the views that read request.POST or request.GET did not."""

from __future__ import annotations

import re
from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

# \u0000 in JSON, unless its backslash is itself escaped (an odd number of backslashes).
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)
DETAIL = "NUL characters (0x00) are not accepted anywhere in a request."


def _has_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path or "%00" in request.META.get("QUERY_STRING", ""):
        return True
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return False
    kind = request.content_type or ""
    try:
        if kind.endswith("json"):
            return bool(_JSON_NUL.search(request.body)) or b"\x00" in request.body
        if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
            # The body first: once request.POST has read the stream, request.body could no
            # longer be read (an agent's signature is checked over it, console.auth).
            request.body  # noqa: B018
            return any(
                "\x00" in key or any("\x00" in value for value in values)
                for key, values in request.POST.lists()
            )
    except RequestDataTooBig:
        return False  # the view reading the body answers 413 (console.api) or 400
    return False


class RefuseNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _has_nul(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"error": "invalid_request", "detail": DETAIL}, status=400)
            if request.path.startswith("/a2a"):  # a JSON-RPC caller gets a JSON-RPC error
                error = {"code": -32600, "message": DETAIL}
                return JsonResponse({"jsonrpc": "2.0", "id": None, "error": error}, status=400)
            return HttpResponseBadRequest(DETAIL)
        return self.get_response(request)
