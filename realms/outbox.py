"""Messages to peers, written in the transaction that causes them (DESIGN.md section 8,
"Nothing lost"). A leaf helper over realms.models: the engine and the loops services queue
here too (a call, a status push) without importing the realms services. After commit the
message is sent to a worker by the task's name (realms.tasks.deliver); if that send is
lost, the beat's deliver_due finds the row."""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction

from realms.models import Outgoing, Peer
from realms.tasks_names import DELIVER


def queue(
    peer: Peer, method: str, params: dict[str, Any], *, key: str, run_id: int | None = None
) -> Outgoing:
    """Queue one message in the caller's transaction; the same key again is the same
    message (a step run twice queues one call)."""
    assert transaction.get_connection().in_atomic_block, "queue() needs the cause's transaction"
    message, created = Outgoing.objects.get_or_create(
        key=key, defaults={"peer": peer, "method": method, "params": params, "run_id": run_id}
    )
    if created:
        transaction.on_commit(lambda: current_app.send_task(DELIVER, (message.pk,)), robust=True)
    return message
