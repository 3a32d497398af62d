"""The list shape of the contract: {"items": [...], "count": n, "next": url or null}."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Schema

MAX_LIMIT = 500


class Page[T](Schema):
    items: list[T]
    count: int
    next: str | None = None


class PageParams(Schema):
    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0)


def page(request: HttpRequest, queryset: QuerySet, params: PageParams) -> dict[str, Any]:
    """One slice of queryset, its total count, and the URL of the next slice if there is one."""
    count = queryset.count()
    end = params.offset + params.limit
    items = list(queryset[params.offset : end])
    next_url = None
    if end < count:
        query = request.GET.copy()
        query["offset"] = str(end)
        query["limit"] = str(params.limit)
        next_url = request.build_absolute_uri(f"{request.path}?{query.urlencode()}")
    return {"items": items, "count": count, "next": next_url}


def whole(items: list[Any]) -> dict[str, Any]:
    """A short list that is never split, in the same shape."""
    return {"items": items, "count": len(items), "next": None}
