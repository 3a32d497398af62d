"""audit_record(): the only writer of AuditEvent (DESIGN.md H5, STYLE.md B.4).

A leaf module: it imports only oversight.models and oversight.chain (a leaf too), so
loops.services may call it too.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction

from oversight.chain import seal_soon
from oversight.models import AuditEvent

_TARGET_TYPES = {
    "looprun": "run",
    "interrupt": "interrupt",
    "circuitbreaker": "breaker",
    "halt": "halt",
    "agent": "agent",
}


def audit_record(
    *,
    actor,
    verb: str,
    target: models.Model,
    note: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    on_behalf: str = "",
) -> AuditEvent:
    """Append who did what to which object, why, and the state before and after.

    In the caller's transaction, so the record and the change commit or vanish together.
    `on_behalf` names a person who is not a user here (a peer realm's: "alice@st-marys").
    """
    assert transaction.get_connection().in_atomic_block, "audit_record needs a transaction"
    person = actor if actor is not None and actor.is_authenticated else None
    model = target._meta.model_name or ""
    event = AuditEvent.objects.create(
        actor=person,
        actor_name=person.get_username() if person else (on_behalf[:150] or "system"),
        verb=verb,
        target_type=_TARGET_TYPES.get(model, model),
        target_id=str(target.pk),
        note=note,
        before=_plain(before),
        after=_plain(after),
        data=_plain(data) or {},
    )
    # The row's place in the hash chain comes after the commit, from the sealer
    # (oversight.chain): no lock here that would queue every writer behind the others.
    transaction.on_commit(seal_soon, robust=True)
    return event


def _plain(value: dict[str, Any] | None) -> Any:
    """JSON-safe (times and decimals as strings), so a record never fails on its payload."""
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))
