"""Celery interfaces of the oversight services: a few lines each (STYLE.md B.6)."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def notification_deliver(notification_id: int) -> None:
    """Send one notification; a duplicate or a replay loses the claim and does nothing."""
    from oversight.services import alerts

    alerts.notification_deliver(notification_id=notification_id)


@shared_task
def notifications_deliver_due() -> None:
    """Beat backstop: retries whose wait is over, lost enqueues, sends of dead workers."""
    from oversight.services import alerts

    alerts.notifications_deliver_due()


@shared_task(acks_late=True)
def breaker_pause_guarded(breaker_id: int) -> None:
    from oversight.services import breakers

    breakers.breaker_pause_guarded(breaker_id=breaker_id)


@shared_task(acks_late=True)
def breaker_resume_guarded(breaker_id: int) -> None:
    from oversight.services import breakers

    breakers.breaker_resume_guarded(breaker_id=breaker_id)


@shared_task
def breakers_half_open_due() -> None:
    from oversight.services import breakers

    breakers.breakers_half_open_due()


@shared_task
def interrupts_withdraw_ended() -> None:
    """Sent on commit of a run's cancel (loops.services.steps.withdraw_waiting_decisions)."""
    from oversight.services import deadlines

    deadlines.interrupts_withdraw_ended()


@shared_task
def interrupts_expire_overdue() -> None:
    from oversight.services import deadlines, ladders

    deadlines.interrupts_withdraw_ended()  # first: an ended run's interrupt gets no default
    ladders.interrupts_climb_due()  # escalation ladders' steps before the deadline (issue 18)
    deadlines.interrupts_expire_overdue()


@shared_task
def audit_seal() -> None:
    """Give committed audit rows their place in the hash chain: sent on commit of each
    transaction that wrote some (oversight.chain.seal_soon), and as a beat sweep."""
    from oversight import chain

    chain.audit_seal()
