"""Who is calling the API (DESIGN.md section 5): a signed-in browser session, or a bearer token.

A user's token acts as that user (request.user); an agent's token makes request.auth the
Agent and leaves request.user anonymous, so an agent holds no role and can only do what a
view grants agents explicitly (its own heartbeat). Tokens are stored as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from console.roles import role_for
from loops.models import Agent, ApiToken

# Writing last_used_at on every request would turn each read into a write; a minute is
# precise enough to tell a live token from a forgotten one.
LAST_USED_PRECISION = timedelta(minutes=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_create(*, user=None, agent: Agent | None = None) -> str:
    """Create a token for a user or an agent and return it; only its hash is kept."""
    token = secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, agent=agent, token_hash=_hash(token))
    return token


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        row = (
            ApiToken.objects.select_related("user", "agent")
            .filter(token_hash=_hash(token), revoked_at__isnull=True)
            .first()
        )
        if row is None or (row.user is not None and not row.user.is_active):
            return None
        now = timezone.now()
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_PRECISION:
            ApiToken.objects.filter(pk=row.pk).update(last_used_at=now)
        if row.user is not None:
            request.user = row.user
            return row.user
        return row.agent


class BrowserSession(SessionAuth):
    """Django's session, with ninja's CSRF check for signed-in users only: an anonymous
    request has no session to forge, so it should hear 401 (sign in), not a CSRF 403."""

    def _get_key(self, request: HttpRequest) -> str | None:
        if not request.user.is_authenticated:
            return None
        return super()._get_key(request)


# Bearer first: ninja stops at the first scheme that raises, and the session's CSRF check
# raises for a token client's POST that carries no CSRF cookie.
API_AUTH = [BearerToken(), BrowserSession()]


def require_perm(request: HttpRequest, perm: str) -> None:
    """Raise a 403 naming the role that grants perm unless the caller holds it."""
    if request.user.has_perm(perm):
        return
    raise HttpError(403, f"This needs the {role_for(perm)} role.")
