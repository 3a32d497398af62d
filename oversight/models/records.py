"""What oversight records: the append-only audit log, alerts with their notifications (the
outbox), and the failure patterns behind advisory alerts."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from loops.models import Agent

USER = settings.AUTH_USER_MODEL


class AuditEvent(models.Model):
    """Who did what, when, why, with the state before and after (DESIGN.md H5).

    Append-only: oversight.audit.audit_record() is the only writer, and a trigger in the
    migration makes PostgreSQL refuse every UPDATE and DELETE of a row, whoever asks; but
    one: the sealer's (oversight.chain), which gives a committed row its place in the hash
    chain once, the chain's three columns from null to a value and nothing else changed.
    A row changed behind the trigger's back no longer matches its hash (docs/AUDIT.md).
    """

    at = models.DateTimeField(default=timezone.now)
    # PROTECT: a person with a history is deactivated, never deleted (the row cannot change).
    actor = models.ForeignKey(USER, models.PROTECT, null=True, blank=True, related_name="+")
    actor_name = models.CharField(max_length=150)  # "system" when no person acted
    verb = models.CharField(max_length=40)  # <entity>.<past tense>: halt.engaged
    target_type = models.CharField(max_length=20)  # run, interrupt, breaker, halt, agent
    target_id = models.CharField(max_length=40)
    note = models.TextField(blank=True)  # the reason a person gave
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    # The hash chain (issue 18), null until the sealer reaches the row: its place (1, 2, …
    # without a gap), the hash of the row before it (GENESIS for the first) and its own hash
    # over its content and that one (oversight.chain.record_hash). Null, not "", while
    # unsealed: the trigger and the constraint below read "no seal" as null in all three.
    chain_position = models.BigIntegerField(null=True, blank=True, unique=True)
    chain_prev = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    chain_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["-at", "-id"]
        permissions = [("verify_auditevent", "Can verify the audit log's hash chain")]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target"),
            models.Index(fields=["verb"], name="audit_verb"),
            models.Index(fields=["-at"], name="audit_at"),
            # The sealer's queue: the rows still waiting for their place in the chain.
            models.Index(fields=["id"], name="audit_unsealed", condition=Q(chain_hash=None)),
        ]
        constraints = [
            # Sealed means all three set; half a seal would be a chain nobody can check.
            models.CheckConstraint(
                condition=Q(chain_position=None, chain_prev=None, chain_hash=None)
                | Q(
                    chain_position__isnull=False,
                    chain_prev__isnull=False,
                    chain_hash__isnull=False,
                ),
                name="audit_sealed_whole",
            )
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_name} {self.verb} {self.target_id}"


class Alert(models.Model):
    """Something people must hear about; the outbox row its notifications are sent from."""

    class Level(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    class Audience(models.TextChoices):
        OPERATORS = "operators"  # operators and admins
        ADMINS = "admins"
        # Or "group:<name>": the members of a named group (an escalation ladder's rung,
        # issue 18), as oversight.notifiers.email.audience_groups reads it.

    kind = models.CharField(max_length=40)  # like an audit verb: breaker.opened
    level = models.CharField(max_length=8, choices=Level, default=Level.WARNING)
    audience = models.CharField(max_length=90, choices=Audience, default=Audience.OPERATORS)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    target_type = models.CharField(max_length=20, blank=True)
    target_id = models.CharField(max_length=40, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    acknowledged_by = models.ForeignKey(
        USER, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("acknowledge_alert", "Can acknowledge alerts")]
        indexes = [
            # The live feed on every page: the newest unacknowledged alerts.
            models.Index(
                fields=["-created_at", "-id"],
                name="alert_unacknowledged",
                condition=Q(acknowledged_at__isnull=True),
            ),
            # An interrupt's open alerts, retired when it is settled (alerts_retire).
            models.Index(
                fields=["target_type", "target_id"],
                name="alert_open_by_target",
                condition=Q(acknowledged_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.level} {self.kind}: {self.title}"


class Notification(models.Model):
    """One delivery of an alert through one channel, retried with backoff until sent."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"  # gave up after the last attempt

    alert = models.ForeignKey(Alert, models.CASCADE, related_name="notifications")
    channel = models.CharField(max_length=120)  # "console", "email", "webhook:<name>"
    status = models.CharField(max_length=8, choices=Status, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["alert", "channel"], name="notification_once")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="notification_due",
                condition=Q(status__in=["pending", "sending"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} for alert {self.alert_id} ({self.status})"


class FailurePattern(models.Model):
    """Identical failures of one agent, counted so that N of them raise one advisory alert,
    not N (CONCEPTS 66). The signature is the agent, the error class and the message with
    its numbers blanked out ("timeout after 3.2 s" and "after 4.1 s" are one pattern)."""

    signature = models.CharField(max_length=64, unique=True)
    agent = models.ForeignKey(Agent, models.CASCADE, related_name="+")
    error_class = models.CharField(max_length=40)
    message = models.TextField(blank=True)  # the latest instance, as it was
    count = models.PositiveIntegerField(default=0)  # in the current streak
    first_at = models.DateTimeField(default=timezone.now)
    last_at = models.DateTimeField(default=timezone.now)
    alert = models.ForeignKey(Alert, models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-last_at"]

    def __str__(self) -> str:
        return f"{self.count} x {self.error_class} of agent {self.agent_id}"
