"""Escalation ladders (issue 18; CONCEPTS 37, 40; DESIGN.md H2, H5): while an interrupt waits,
the steps its policy declared (loops.specs.Rung) remind its audience again or take it to the
next tier, each once, audited as the system, told through the alert outbox and pushed to
every inbox; the deadline and its default (oversight.services.deadlines) are the last step.

The ladder is copied onto the interrupt when it is raised, with absolute times, so that a
declaration changed meanwhile does not move a pending interrupt's steps. An escalation only
widens who is told (an escalation to admins also sets the interrupt's tier to admin): who
may decide is unchanged, since an operator who sees it late should still be able to act.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from common.db import retry_deadlocks
from common.push import INBOX_GROUP, push_on_commit
from loops.models import LoopRun
from loops.specs import Escalate
from oversight import presenting
from oversight.audit import audit_record
from oversight.models import Alert, Interrupt
from oversight.services.alerts import alert_raise
from oversight.services.interrupt_rules import LEVEL, interrupt_update_html, where

SWEEP_BATCH = 500
VERB = {"remind": "interrupt.reminded", "escalate": "interrupt.escalated"}


def ladder_as_raised(
    policy: Escalate, now: datetime
) -> tuple[list[dict[str, Any]] | None, datetime | None]:
    """The policy's ladder with absolute times from now, and when its first rung is due;
    (None, None) without a ladder."""
    if not policy.ladder:
        return None, None
    ladder = [
        {
            "at": (now + timedelta(seconds=rung.after_s)).isoformat(),
            "action": rung.action,
            "to": rung.to,
            "done_at": None,
        }
        for rung in policy.ladder
    ]
    return ladder, now + timedelta(seconds=policy.ladder[0].after_s)


def _next_due(ladder: list[dict[str, Any]]) -> datetime | None:
    waiting = [datetime.fromisoformat(r["at"]) for r in ladder if r["done_at"] is None]
    return min(waiting, default=None)


@retry_deadlocks
@transaction.atomic(durable=True)
def interrupt_climb(*, interrupt_id: int, now: datetime | None = None) -> list[dict[str, Any]]:
    """Take the rungs of the interrupt's ladder that are due; returns them (none: nothing due).

    1. Lock the run, then the interrupt, as a decision and the expiry do: a decision that
       wins first leaves nothing to climb, and of two sweepers the second finds the rung
       taken (done_at set, rung_due_at moved on) and returns quietly.
    2. Past the deadline, nothing: the expiry applies the default and tells the admins.
    3. Each due rung (several if the sweep was held up): stamped, told to its audience
       through the outbox, audited as the system; then the card is pushed.
    """
    now = now or timezone.now()
    run_id = Interrupt.objects.values_list("run_id", flat=True).get(pk=interrupt_id)
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    due = interrupt.rung_due_at
    if not interrupt.is_pending or due is None or due > now or interrupt.deadline_at <= now:
        return []
    if run.is_terminal:
        return []  # interrupts_withdraw_ended takes it: nobody needs reminding
    ladder = [dict(rung) for rung in interrupt.ladder or []]
    taken = [
        index
        for index, rung in enumerate(ladder)
        if rung["done_at"] is None and datetime.fromisoformat(rung["at"]) <= now
    ]
    for index in taken:
        ladder[index]["done_at"] = now.isoformat()
    interrupt.ladder, interrupt.rung_due_at = ladder, _next_due(ladder)
    for index in taken:
        _take(run, interrupt, ladder[index], index=index)
    interrupt.save(update_fields=["ladder", "rung_due_at", "tier"])
    push_on_commit(INBOX_GROUP, lambda: interrupt_update_html(interrupt.pk))
    return [ladder[index] for index in taken]


def _take(run: LoopRun, interrupt: Interrupt, rung: dict[str, Any], *, index: int) -> None:
    """One rung: the tier it moves the interrupt to, its alert and its audit row."""
    before = interrupt.tier
    if rung["action"] == "escalate" and rung["to"] == Alert.Audience.ADMINS:
        interrupt.tier = Interrupt.Tier.ADMIN
    who = presenting.audience_name(rung["to"])
    what = "Reminder" if rung["action"] == "remind" else "Escalated"
    countdown = presenting.ladder_sentence(
        interrupt.ladder,
        deadline_at=interrupt.deadline_at,
        default_action=interrupt.default_action,
        tz=timezone.get_current_timezone(),
    )
    alert_raise(
        kind=VERB[rung["action"]],
        level=LEVEL.get(interrupt.severity, Alert.Level.WARNING),
        audience=rung["to"],
        title=f"{what}: decision needed: {interrupt.reason}"[:200],
        body=f"Interrupt {interrupt.pk} on run {run.pk} ({where(interrupt.address)}) still "
        f"waits for a decision; it {countdown}.",
        target=interrupt,
        data={"run": run.pk, "rung": index},
    )
    audit_record(
        actor=None,
        verb=VERB[rung["action"]],
        target=interrupt,
        note=f"{'reminded' if rung['action'] == 'remind' else 'escalated to'} {who}: "
        f"no decision since {interrupt.created_at.isoformat()}",
        before={"tier": before},
        after={"tier": interrupt.tier, "rung": index, "done_at": rung["done_at"]},
        data={"run": run.pk, "to": rung["to"], "at": rung["at"]},
    )


def interrupts_climb_due(now: datetime | None = None) -> int:
    """The beat sweep (with the expiry): take every due rung of a pending interrupt before
    its deadline; returns how many were taken. A copy of a peer's interrupt climbs its
    ladder in the peer (DESIGN.md H9)."""
    now = now or timezone.now()
    due = Interrupt.objects.filter(
        status=Interrupt.Status.PENDING,
        rung_due_at__lte=now,
        deadline_at__gt=now,
        remote__isnull=True,
    )
    return sum(
        len(interrupt_climb(interrupt_id=pk, now=now))
        for pk in list(due.values_list("pk", flat=True)[:SWEEP_BATCH])
    )
