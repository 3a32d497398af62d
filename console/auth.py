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


class Needs:
    """An operation's auth: the API's schemes, then perm, before the request's body or query
    is read, so a caller without the role hears 403 whatever it sent (H6). ninja answers 401
    when no scheme knows the caller, and turns the HttpError into the 403."""

    def __init__(self, perm: str | None, *, agents: bool = False, people_refused: str = "") -> None:
        self.perm = perm  # None: no person may (people_refused says why)
        self.agents = agents  # an agent's token may too (the operation checks which agent)
        self.people_refused = people_refused

    def __call__(self, request: HttpRequest) -> Any:
        for scheme in API_AUTH:
            caller = scheme(request)
            if caller:
                break
        else:
            return None
        if isinstance(caller, Agent) and self.agents:
            return caller
        if self.perm is None:
            raise HttpError(403, self.people_refused)
        if isinstance(caller, Agent):
            raise HttpError(
                403, f"An agent's token holds no role; this needs the {role_for(self.perm)} role."
            )
        if not request.user.has_perm(self.perm):
            raise HttpError(403, f"This needs the {role_for(self.perm)} role.")
        return caller


def require_perm(request: HttpRequest, perm: str) -> None:
    """Raise a 403 naming the role that grants perm unless the caller holds it."""
    if request.user.has_perm(perm):
        return
    raise HttpError(403, f"This needs the {role_for(perm)} role.")
