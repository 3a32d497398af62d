"""Messages to peers, written in the transaction that causes them (DESIGN.md section 8,
"Nothing lost"). A leaf helper over realms.models: the engine and the loops services queue
here too (a call, a status push) without importing the realms services. After commit the
message goes (realms.tasks.deliver, by name: at once in a worker, else through the queue);
if that is lost, the beat's deliver_due finds the row."""

from __future__ import annotations

from typing import Any

from celery import current_app, current_task
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
        transaction.on_commit(lambda: _deliver(message.pk), robust=True)
    return message


def _deliver(message_id: int) -> None:
    """In a worker's task (a step that spawned a remote frame or ended a peer's run), the
    message goes at once, from this process: the hop through the queue cost more than the
    call itself on a busy host (./bin/bench realms). Elsewhere (a web request, which must
    not wait on a peer) a worker sends it."""
    if current_task:
        current_app.tasks[DELIVER](message_id)
    else:
        current_app.send_task(DELIVER, (message_id,))
