"""Alerts and their notifications through an outbox (CONCEPTS 35, 38, 41, 42; STYLE.md B.6).

alert_raise() writes the Alert and one Notification per channel in the caller's transaction
and enqueues their delivery on commit. notification_deliver() claims one notification with a
compare-and-set, sends it outside any transaction and records the outcome; transient
failures wait with backoff for the notifications_deliver_due sweeper. So a failing or slow
notifier never blocks an interrupt or a halt, and no notification is lost or sent twice.

alert_acknowledge() is the person's side: one acknowledgement wins, is audited, and takes
the alert out of every open console's feed. alerts_retire() is the system's: an alert that
asked for a decision leaves the feeds once the decision is settled (issue 17).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from psycopg.types.json import Jsonb

from common.backoff import backoff
from common.db import prepared_cursor
from common.push import CONSOLE_GROUP, push_on_commit
from common.refusals import Refused
from oversight import fragments
from oversight.audit import audit_record
from oversight.models import Alert, Notification
from oversight.notifiers import NotifyError, notifier_for
from oversight.notifiers.email import audience_groups

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 5.0
BACKOFF_CAP_SECONDS = 600.0
SWEEP_BATCH = 200
# A new notification is enqueued on commit; the sweeper enqueues it again only when it is
# still untouched this long after (the enqueue was lost), not while its first task waits.
FIRST_SEND_GRACE_SECONDS = 30

Status = Notification.Status


def alert_raise(
    *,
    kind: str,
    title: str,
    body: str = "",
    level: str = Alert.Level.WARNING,
    audience: str = Alert.Audience.OPERATORS,
    target: models.Model | None = None,
    data: dict[str, Any] | None = None,
) -> Alert:
    """Write an alert and one notification per channel in the caller's transaction; they
    are delivered after commit, so a failing notifier never blocks the caller."""
    assert transaction.get_connection().in_atomic_block, "alert_raise needs a transaction"
    alert = Alert(
        kind=kind,
        title=title[:200],
        body=body,
        level=level,
        audience=audience,
        target_type=(target._meta.model_name or "") if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        data=data or {},
    )
    # One statement for the alert, the check for an email address and the notifications:
    # an interrupt's alert is written in the raising step's transaction, which its inbox
    # push waits for (DESIGN.md section 6), and each statement is a round trip.
    with prepared_cursor() as cursor:
        cursor.execute(_RAISE, _raise_params(alert))
        rows = cursor.fetchall()  # one at least: every alert goes to the console
    alert.pk = rows[0][1]
    for notification, _ in rows:
        # robust: a broker outage is logged, never raised into a committed decision; the
        # sweeper sends what was not enqueued.
        transaction.on_commit(partial(_enqueue, notification), robust=True)
    return alert


def _raise_params(alert: Alert) -> dict[str, Any]:
    channels = ["console", "email", *(f"webhook:{name}" for name in settings.ALERT_WEBHOOKS)]
    return {
        **{f: getattr(alert, f) for f in ("kind", "level", "audience", "title", "body")},
        "target_type": alert.target_type,
        "target_id": alert.target_id,
        "data": Jsonb(alert.data),
        "created_at": alert.created_at,
        "groups": list(audience_groups(alert.audience)),
        "channels": channels,
    }


# The alert; a notification per channel: always the console, email when an active superuser
# or a member of the audience's groups has an address (as oversight.notifiers.email.recipients
# finds them), each webhook. Returns (notification, alert) in the channels' order.
_RAISE = """
WITH alert AS (
    INSERT INTO oversight_alert
        (kind, level, audience, title, body, target_type, target_id, data, created_at)
    VALUES (%(kind)s, %(level)s, %(audience)s, %(title)s, %(body)s, %(target_type)s,
        %(target_id)s, %(data)s, %(created_at)s)
    RETURNING id, created_at
), addressed AS (
    SELECT EXISTS (
        SELECT 1 FROM auth_user u
        WHERE u.is_active AND u.email <> '' AND (u.is_superuser OR EXISTS (
            SELECT 1 FROM auth_user_groups m JOIN auth_group g ON g.id = m.group_id
            WHERE m.user_id = u.id AND g.name = ANY(%(groups)s)))
    ) AS email
)
INSERT INTO oversight_notification
    (alert_id, channel, status, attempts, next_attempt_at, last_error)
SELECT alert.id, c.channel, 'pending', 0, alert.created_at, ''
FROM alert, addressed, unnest(%(channels)s::text[]) WITH ORDINALITY AS c(channel, n)
WHERE c.channel <> 'email' OR addressed.email
ORDER BY c.n
RETURNING id, alert_id
"""


def _enqueue(notification_id: int) -> None:
    """The delivery task, sent by name (services import no tasks module)."""
    current_app.send_task("oversight.tasks.notification_deliver", (notification_id,))


def notification_deliver(*, notification_id: int, now: datetime | None = None) -> None:
    """Send one notification through its channel, at most one worker at a time.

    1. Claim it with a compare-and-set: a pending one that is due, or one left sending for
       longer than NOTIFICATION_CLAIM_SECONDS (its worker died mid-send). Losing means
       another worker has it, or it is sent, failed or not due yet: return quietly.
    2. Send through the channel's notifier outside any transaction (a webhook may take its
       whole timeout, an SMTP server longer).
    3. Record the outcome with a compare-and-set on our claim, so a worker that took so long
       that it was taken over cannot overwrite its successor's result.
    """
    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.NOTIFICATION_CLAIM_SECONDS)
    claimed = (
        Notification.objects.filter(pk=notification_id)
        .filter(
            Q(status=Status.PENDING, next_attempt_at__lte=now)
            | Q(status=Status.SENDING, claimed_at__lt=stale)
        )
        .update(status=Status.SENDING, claimed_at=now)
    )
    if claimed != 1:
        return
    notification = Notification.objects.select_related("alert").filter(pk=notification_id).first()
    if notification is None:
        return  # The alert was deleted meanwhile.
    error = _send(notification)
    _record(notification, error=error, now=now)


def _send(notification: Notification) -> NotifyError | None:
    try:
        notifier_for(notification.channel).send(notification.alert)
    except NotifyError as exc:
        return exc
    except Exception as exc:
        # A notifier's bug still counts as an attempt, or the row would be retried forever.
        logger.exception("notifier for %s failed unexpectedly", notification.channel)
        return NotifyError(f"{type(exc).__name__}: {exc}")
    return None


def _record(notification: Notification, *, error: NotifyError | None, now: datetime) -> None:
    ours = Notification.objects.filter(pk=notification.pk, status=Status.SENDING, claimed_at=now)
    attempts = notification.attempts + 1
    if error is None:
        changes: dict[str, Any] = {"status": Status.SENT, "sent_at": now, "last_error": ""}
    elif error.permanent or attempts >= settings.NOTIFICATION_MAX_ATTEMPTS:
        changes = {"status": Status.FAILED, "last_error": error.message[:2000]}
        logger.warning("gave up on %s after %d attempts: %s", notification, attempts, error)
    else:
        changes = {
            "status": Status.PENDING,
            "last_error": error.message[:2000],
            "next_attempt_at": now + notification_backoff(attempts=attempts),
        }
    if ours.update(attempts=attempts, **changes) != 1:
        logger.warning("%s was taken over while sending; its outcome is not ours", notification)


def notification_backoff(*, attempts: int) -> timedelta:
    """How long to wait after the n-th failed attempt: the ceiling doubles from 5 s up to
    10 minutes, and the wait lies at random in its upper half. The jitter spreads retries to
    one receiver that came back; the fixed half keeps every wait longer than the one before
    (until the cap), which the "equal jitter" of AWS's backoff article guarantees and full
    jitter does not."""
    wait = backoff(attempts, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS, jitter="equal")
    return timedelta(seconds=wait)


def notifications_deliver_due(*, now: datetime | None = None) -> list[int]:
    """Enqueue the notifications a worker should send now (the beat backstop): retries
    whose wait is over, first sends whose enqueue was lost, and sends whose worker died.
    Enqueuing one twice is harmless: only one task wins the claim."""
    now = now or timezone.now()
    due = list(
        Notification.objects.filter(
            status__in=(Status.PENDING, Status.SENDING), next_attempt_at__lte=now
        )
        .filter(
            Q(status=Status.PENDING, attempts__gt=0)
            | Q(
                status=Status.PENDING,
                next_attempt_at__lte=now - timedelta(seconds=FIRST_SEND_GRACE_SECONDS),
            )
            | Q(
                status=Status.SENDING,
                claimed_at__lt=now - timedelta(seconds=settings.NOTIFICATION_CLAIM_SECONDS),
            )
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    for notification_id in due:
        _enqueue(notification_id)
    return due


@transaction.atomic(durable=True)
def alert_acknowledge(*, alert_id: int, actor, note: str = "") -> Alert:
    """A person has seen the alert and takes it from every console's feed.

    1. Lock the alert row. FOR NO KEY UPDATE: the notifications and failure patterns that
       point at it still insert meanwhile (their foreign-key checks take only KEY SHARE).
    2. Exactly one acknowledgement wins; the others find it taken and hear who and when.
    3. Stamp it, audit it, and after commit push the fragment that deletes it from every open
       feed. A failure pattern whose advisory this was counts a fresh streak from the next
       failure (oversight/services/patterns.py reads acknowledged_at).
    """
    alert = Alert.objects.select_for_update(no_key=True).filter(pk=alert_id).first()
    if alert is None:
        raise Refused(404, "not_found", f"There is no alert {alert_id}.")
    if alert.acknowledged_at is not None:
        raise Refused(409, "already_acknowledged", already_acknowledged(alert))
    alert.acknowledged_by, alert.acknowledged_at = actor, timezone.now()
    alert.save(update_fields=["acknowledged_by", "acknowledged_at"])
    audit_record(
        actor=actor,
        verb="alert.acknowledged",
        target=alert,
        note=note,
        before={"acknowledged_at": None},
        after={"acknowledged_at": alert.acknowledged_at, "acknowledged_by": actor.get_username()},
        data={"kind": alert.kind, "level": alert.level, "title": alert.title},
    )
    push_on_commit(CONSOLE_GROUP, partial(fragments.alert_gone, alert.pk))
    return alert


# The alerts that ask for a decision; once it is settled they have nothing left to ask. The
# expiry's alert to the admins stays: it tells of what the system did in nobody's place.
ASKING_FOR_A_DECISION = ("interrupt.raised", "interrupt.reminded", "interrupt.escalated")


def alerts_retire(*, target: models.Model, why: str) -> list[int]:
    """In the transaction that settled `target` (an interrupt, or a copy of a peer's): its
    alerts asking for a decision are acknowledged by nobody, the system, with `why` kept in
    their data, audited, and taken from every open feed after commit. So a feed holds what
    still needs a person, not hundreds of decisions long gone (each alert in it is a button
    more that the browser's form scans go over)."""
    params: dict[str, Any] = {
        "target_type": target._meta.model_name or "",
        "target_id": str(target.pk),
        "kinds": list(ASKING_FOR_A_DECISION),
        "now": timezone.now(),
        "why": Jsonb({"retired": why}),
    }
    with prepared_cursor() as cursor:
        cursor.execute(_RETIRE, params)
        retired = cursor.fetchall()
    for pk, kind, level, title, at in retired:
        audit_record(
            actor=None,
            verb="alert.retired",
            target=Alert(pk=pk),
            note=why,
            before={"acknowledged_at": None},
            after={"acknowledged_at": at},
            data={"kind": kind, "level": level, "title": title},
        )
    ids = [row[0] for row in retired]
    if ids:
        push_on_commit(CONSOLE_GROUP, partial(_gone, ids))
    return ids


_RETIRE = """
UPDATE oversight_alert
SET acknowledged_at = %(now)s, data = data || %(why)s
WHERE target_type = %(target_type)s AND target_id = %(target_id)s
    AND kind = ANY(%(kinds)s) AND acknowledged_at IS NULL
RETURNING id, kind, level, title, acknowledged_at
"""


def _gone(alert_ids: list[int]) -> str:
    return "".join(fragments.alert_gone(pk) for pk in alert_ids)


def already_acknowledged(alert: Alert) -> str:
    at = alert.acknowledged_at.isoformat() if alert.acknowledged_at else "an unknown time"
    if alert.acknowledged_by is None and alert.data.get("retired"):
        return f"Alert {alert.pk} was retired at {at}: {alert.data['retired']}."
    by = alert.acknowledged_by.get_username() if alert.acknowledged_by else "someone since removed"
    return f"Alert {alert.pk} was already acknowledged by {by} at {at}."
