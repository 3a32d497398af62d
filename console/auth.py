"""Who is calling the API (DESIGN.md section 5): a signed-in browser session, or a bearer token.

A user's token acts as that user (request.user); an agent's token makes request.auth the
Agent and leaves request.user anonymous, so an agent holds no role and can only do what a
view grants agents explicitly (its own heartbeat). An agent's request must also be signed
with its shared secret (common.signing), each signature accepted once.

Tokens are stored as SHA-256 hashes. A token works until its revoked_at: never when that is
null, until then when it is in the future (a rotated token's grace), no longer once it has
passed. Creating, rotating and revoking one is audited (H5).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import redis
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from common import signing
from common.redis import redis_client
from console.roles import role_for
from loops.models import Agent, ApiToken
from oversight.audit import audit_record

# Writing last_used_at on every request would turn each read into a write; a minute is
# precise enough to tell a live token from a forgotten one.
LAST_USED_PRECISION = timedelta(minutes=1)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_create(*, user=None, agent: Agent | None = None) -> str:
    """Create a token for a user or an agent and return it; only its hash is kept."""
    return _token_new(user=user, agent=agent)[1]


def _token_new(*, user=None, agent: Agent | None = None) -> tuple[ApiToken, str]:
    token = secrets.token_urlsafe(32)
    return ApiToken.objects.create(user=user, agent=agent, token_hash=_hash(token)), token


def tokens_working(now: datetime) -> Q:
    """Tokens that still work at now: not revoked, or revoked from a time still to come."""
    return Q(revoked_at__isnull=True) | Q(revoked_at__gt=now)


def token_owner(row: ApiToken) -> str:
    if row.user is not None:
        return f"user {row.user.get_username()}"
    return f"agent {row.agent}"


@transaction.atomic
def token_issue(
    *, actor, user=None, agent: Agent | None = None, grace: timedelta | None = None
) -> tuple[ApiToken, str, list[ApiToken]]:
    """A new token for the owner, audited as actor; returns the row, the token (shown once)
    and the tokens rotated out.

    1. With grace (a rotation), the owner's other working tokens stop working grace from
       now, so a deployed agent can switch without downtime; a sooner end is kept.
    2. One audit row for the new token, one per token rotated out (before/after).
    """
    now = timezone.now()
    rotated: list[ApiToken] = []
    if grace is not None:
        ends = now + grace
        owned = ApiToken.objects.select_related("user", "agent").filter(user=user, agent=agent)
        for old in owned.select_for_update(of=("self",)).filter(
            Q(revoked_at__isnull=True) | Q(revoked_at__gt=ends)
        ):
            note = f"rotated out; works until {ends.isoformat()}"
            rotated.append(_token_end(old, ends, actor=actor, verb="token.rotated", note=note))
    row, token = _token_new(user=user, agent=agent)
    audit_record(
        actor=actor,
        verb="token.created",
        target=row,
        after={"created_at": row.created_at, "revoked_at": None},
        data={
            "owner": token_owner(row),
            "rotated_out": [old.pk for old in rotated],
            "grace_s": grace.total_seconds() if grace is not None else None,
        },
    )
    return row, token, rotated


@transaction.atomic
def tokens_revoke(*, actor, tokens: Iterable[int], note: str = "") -> list[ApiToken]:
    """Revoke the tokens now (those in a rotation's grace too), one audit row each; returns
    those revoked. A token that has already stopped working is left as it is."""
    now = timezone.now()
    rows = ApiToken.objects.select_related("user", "agent").select_for_update(of=("self",))
    return [
        _token_end(row, now, actor=actor, verb="token.revoked", note=note)
        for row in rows.filter(tokens_working(now), pk__in=list(tokens)).order_by("pk")
    ]


def _token_end(row: ApiToken, at: datetime, *, actor, verb: str, note: str) -> ApiToken:
    """Make a locked token stop working at `at` (now, or a rotation's grace end), audited."""
    before, row.revoked_at = row.revoked_at, at
    row.save(update_fields=["revoked_at"])
    audit_record(
        actor=actor,
        verb=verb,
        target=row,
        note=note,
        before={"revoked_at": before},
        after={"revoked_at": at},
        data={"owner": token_owner(row)},
    )
    return row


class SignatureRefused(HttpError):
    """401 for an agent's request without a valid, fresh, first-seen signature; code names
    the problem (common.signing)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(401, detail)
        self.code = code


REPLAY_KEY = "agent-signature:{agent}:{signature}"


def agent_signature_check(request: HttpRequest, agent: Agent) -> None:
    """Raise SignatureRefused unless the request is signed with the agent's secret.

    1. The agent must have a secret (config "secret" or "secret_env", as the console uses
       for its own calls to it).
    2. common.signing.check: both headers, the signature over the raw body, the clock.
    3. Replays: the first use of a signature sets a Redis key (SET NX) that lives until the
       timestamp leaves the window, so the same signed request is refused within it too.
    """
    secret = signing.shared_secret(agent.config)
    if not secret:
        named = agent.config.get("secret_env")
        why = f"the environment variable {named} is unset" if named else "no secret or secret_env"
        raise SignatureRefused(
            "agent_secret_missing",
            f"Agent {agent} has no signing secret configured ({why} in its config), so its "
            "requests cannot be verified.",
        )
    given = request.headers.get(signing.SIGNATURE_HEADER)
    now = time.time()
    try:
        at = signing.check(
            secret, request.headers.get(signing.TIMESTAMP_HEADER), request.body, given, now=now
        )
    except signing.SignatureRejected as exc:
        raise SignatureRefused(exc.code, exc.detail) from None
    key = REPLAY_KEY.format(agent=agent.pk, signature=given)
    ttl = max(1, at + signing.MAX_AGE_SECONDS - int(now) + 1)
    try:
        first = redis_client().set(key, 1, nx=True, ex=ttl)
    except redis.RedisError as exc:  # fail closed: without the guard a replay would pass
        raise HttpError(503, "The replay guard (Redis) does not answer; try again.") from exc
    if not first:
        raise SignatureRefused(
            "signature_replayed",
            f"This signature was already accepted; each is accepted once within the "
            f"{signing.MAX_AGE_SECONDS} s window. Sign each request afresh (a new timestamp).",
        )


class BearerToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        now = timezone.now()
        row = (
            ApiToken.objects.select_related("user", "agent")
            .filter(tokens_working(now), token_hash=_hash(token))
            .first()
        )
        if row is None or (row.user is not None and not row.user.is_active):
            return None
        if row.agent is not None:
            agent_signature_check(request, row.agent)  # before any write: a refusal changes nothing
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

    # In the OpenAPI document (console.api names it "bearer"): either of API_AUTH's schemes.
    openapi_security_schema = {
        "type": "http",
        "scheme": "bearer",
        "description": "Authorization: Bearer <token>; or a signed-in browser session with "
        "its X-CSRFToken header. An agent's token also signs each request (common.signing).",
    }

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
