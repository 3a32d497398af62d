"""The navigation's domains (templates/console/_nav.html): every page names them, so that
each domain's live stack is one click away from anywhere (issue 17)."""

from __future__ import annotations

from django.http import HttpRequest

from loops.models import Domain


def nav_domains() -> list[tuple[str, str]]:
    """(slug, name) of every domain, by name: one query of two columns."""
    return list(Domain.objects.order_by("name").values_list("slug", "name"))


def navigation(request: HttpRequest) -> dict[str, object]:
    # A callable: the template calls it only where the navigation shows (signed in).
    return {"nav_domains": nav_domains}
