"""What happens to an interrupt nobody decides (DESIGN.md H2): past its deadline its default
applies, audited as the system, and the admins are told; if its run ended first (cancelled,
out of time or budget), it is withdrawn, with no default and no alert. Both are beat sweeps
(oversight.tasks), and both lock the run, then the interrupt, as a decision does."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from common.db import retry_deadlocks
from common.metrics import interrupt_decided_on_commit
from common.push import INBOX_GROUP, overview_push, push_on_commit
from loops.models import LoopRun
from oversight.audit import audit_record
from oversight.models import Alert, Interrupt
from oversight.services.alerts import alert_raise, alerts_retire
from oversight.services.interrupts import continue_after, interrupt_update_html, where
from realms import decisions


@retry_deadlocks
@transaction.atomic(durable=True)
def interrupt_expire(*, interrupt_id: int, now: datetime | None = None) -> Interrupt | None:
    """Past its deadline: apply the default, audit it, and escalate to the admins."""
    now = now or timezone.now()
    run_id = Interrupt.objects.values_list("run_id", flat=True).get(pk=interrupt_id)
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not interrupt.is_pending or interrupt.deadline_at > now:
        return None  # decided meanwhile, or not due: another sweep got there first
    if run.is_terminal:
        return None  # nothing to apply a default to: interrupts_withdraw_ended takes it
    rejects = interrupt.default_action == Interrupt.Decision.REJECT
    interrupt.move_to(
        Interrupt.Status.EXPIRED,
        at=now,
        decision=interrupt.default_action,
        comment="No decision before the deadline; the default (reject) applied." if rejects else "",
    )
    interrupt.tier = Interrupt.Tier.ADMIN
    interrupt.rung_due_at = None  # the ladder's last step: rungs not taken never will be
    interrupt.save(
        update_fields=["status", "decision", "decided_at", "tier", "comment", "rung_due_at"]
    )
    interrupt_decided_on_commit(how="expired", raised=interrupt.created_at, decided=now)
    run_state = continue_after(run, interrupt, by="deadline")
    audit_record(
        actor=None,
        verb="interrupt.expired",
        target=interrupt,
        note=f"deadline {interrupt.deadline_at.isoformat()} passed; "
        f"default {interrupt.default_action} applied",
        before={"status": Interrupt.Status.PENDING},
        after={"status": interrupt.status, "decision": interrupt.decision, "run_state": run_state},
        data={"run": run.pk},
    )
    alert_raise(
        kind="interrupt.expired",
        level=Alert.Level.CRITICAL,
        audience=Alert.Audience.ADMINS,
        title=f"Nobody decided in time: {interrupt.reason}"[:200],
        body=f"Interrupt {interrupt.pk} on run {run.pk} ({where(interrupt.address)}) passed its "
        f"deadline; its default, {interrupt.default_action}, was applied.",
        target=interrupt,
        data={"run": run.pk},
    )
    why = f"interrupt {interrupt.pk} expired; its default ({interrupt.default_action}) applied"
    alerts_retire(target=interrupt, why=why)
    decisions.interrupt_settled(interrupt)
    push_on_commit(INBOX_GROUP, lambda: interrupt_update_html(interrupt.pk))
    overview_push()
    return interrupt


def interrupts_expire_overdue(now: datetime | None = None) -> int:
    """The beat sweep: expire every pending interrupt past its deadline."""
    now = now or timezone.now()
    # A copy of a peer's interrupt has no deadline here: the peer applies its own (H9).
    due = Interrupt.objects.filter(
        status=Interrupt.Status.PENDING, deadline_at__lte=now, remote__isnull=True
    )
    return sum(
        1
        for pk in list(due.values_list("pk", flat=True)[:500])
        if interrupt_expire(interrupt_id=pk, now=now)
    )


@retry_deadlocks
@transaction.atomic(durable=True)
def interrupt_withdraw(*, interrupt_id: int) -> Interrupt | None:
    """Its run ended (cancelled, out of time or budget) while the interrupt waited: there is
    nothing left to decide, so it leaves every inbox, and no default or deadline alert
    follows. Lock order: the run, then the interrupt."""
    run_id = Interrupt.objects.values_list("run_id", flat=True).get(pk=interrupt_id)
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not interrupt.is_pending or not run.is_terminal:
        return None  # decided meanwhile, or another sweep got there first
    why = f"run {run.pk} ended ({run.state}) before a decision"
    interrupt.move_to(Interrupt.Status.WITHDRAWN, at=timezone.now(), comment=why)
    interrupt.save(update_fields=["status", "decided_at", "comment"])
    audit_record(
        actor=None,
        verb="interrupt.withdrawn",
        target=interrupt,
        note=interrupt.comment,
        before={"status": Interrupt.Status.PENDING},
        after={"status": interrupt.status, "run_state": run.state},
        data={"run": run.pk},
    )
    alerts_retire(target=interrupt, why=f"interrupt {interrupt.pk} was withdrawn: {why}")
    decisions.interrupt_settled(interrupt)
    push_on_commit(INBOX_GROUP, lambda: interrupt_update_html(interrupt.pk))
    overview_push()
    return interrupt


def interrupts_withdraw_ended() -> int:
    """The beat sweep (with the expiry): withdraw every pending interrupt whose run ended."""
    ended = Interrupt.objects.filter(
        status=Interrupt.Status.PENDING, run__state__in=LoopRun.TERMINAL
    )
    return sum(
        1
        for pk in list(ended.values_list("pk", flat=True)[:500])
        if interrupt_withdraw(interrupt_id=pk) is not None
    )
