"""Pages of rows: the API's list shape ({"items": [...], "count": n, "next": url or null},
offset and limit) and the console pages' numbered pages (page_clamped)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from django.core.paginator import Page as NumberedPage
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Schema
from pydantic import AfterValidator, BeforeValidator

MAX_LIMIT = 500
# PostgreSQL's OFFSET is a bigint: a larger one was a 500 (found by tests/security/test_fuzz.py).
MAX_OFFSET = 2**63 - 1


def _in_utc(moment: datetime) -> datetime:
    """A filter's time in UTC, as the database compares it: PostgreSQL refuses offsets past
    ±15:59 (a 500 the fuzz test found), and a naive time is taken as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time in UTC is before year 1") from None


_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_8601(value: object) -> object:
    """pydantic would read a number as seconds since 1970 (until=0.5 passed: the fuzz test
    found it); the document says ISO 8601 (format date-time), so a time must start as one."""
    if not (isinstance(value, str) and _ISO_DATE.match(value)):
        raise ValueError("not an ISO 8601 time such as 2026-01-31T12:00:00Z")
    return value


# A time given as a filter (since, until): ISO 8601, any offset.
Moment = Annotated[datetime, BeforeValidator(_iso_8601), AfterValidator(_in_utc)]


class Page[T](Schema):
    items: list[T]
    count: int
    next: str | None = None


class PageParams(Schema):
    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


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


def page_clamped(
    rows: QuerySet | list[Any], number: int | str | None, *, per_page: int
) -> NumberedPage:
    """One page of rows, numbered from 1, by Django's Paginator.get_page: a number past the
    last page is the last page and one that is no page number the first, since such a number
    comes from a hand-made URL and the nearest page is the useful answer (a view that
    refuses it says so first). Two queries for a queryset: its count and the page's rows."""
    return Paginator(rows, per_page).get_page(number)
