"""Celery interfaces of the realms services: a few lines each (STYLE.md B.6)."""

from __future__ import annotations

from celery import shared_task

from realms.services import delivery, frames, partitions


@shared_task(acks_late=True)
def deliver(message_id: int) -> None:
    delivery.deliver(message_id)


@shared_task
def deliver_due() -> None:
    """Beat backstop: messages due for a retry, or whose send after commit was lost."""
    for message_id in delivery.due():
        delivery.deliver(message_id)


@shared_task
def frames_reconcile() -> None:
    delivery.frames_reconcile()


@shared_task(acks_late=True)
def frame_refused(frame_id: int) -> None:
    frames.frame_refused(frame_id=frame_id)


@shared_task
def peers_probe() -> None:
    """Beat: reachability and latency of each peer; partitions pause and resume (H10)."""
    partitions.peers_probe()
