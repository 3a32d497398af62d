"""The realms' models. They import no other app's models: a remote frame is a loops.LoopRun
whose `remote` names its peer and task, and an outgoing message names the run it is about
by id, so loops may queue one (realms.outbox) without a cycle."""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.utils import timezone

from common.states import check_move


class Peer(models.Model):
    """Another console this one knows by its key. Only an approved peer is heard (H5)."""

    class Status(models.TextChoices):
        PENDING = "pending"  # asked, not yet approved by this realm's admins (or by theirs)
        APPROVED = "approved"
        SUSPENDED = "suspended"
        REFUSED = "refused"

    class Kind(models.TextChoices):
        REALM = "realm"  # another Loop Stack Console: signed requests both ways
        CLIENT = "client"  # a stock A2A client holding a bearer token of ours

    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        Status.PENDING: frozenset({Status.APPROVED, Status.REFUSED}),
        Status.APPROVED: frozenset({Status.SUSPENDED}),
        Status.SUSPENDED: frozenset({Status.APPROVED}),
        Status.REFUSED: frozenset({Status.PENDING}),  # asked again
    }

    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=120, blank=True)
    kind = models.CharField(max_length=8, choices=Kind, default=Kind.REALM)
    url = models.URLField(max_length=300, blank=True)  # its public base URL
    fingerprint = models.CharField(max_length=80, unique=True)  # its key id (a client's: its
    # token's)
    public_key = models.CharField(max_length=80, blank=True)  # raw Ed25519, base64url
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    # Pairing needs an admin of each side (H5). Ours approve by naming the peer (asking) or
    # by approving its request; theirs by the same, which reaches us as a signed message.
    # `status` becomes approved once both have.
    we_approved = models.BooleanField(default=False)
    they_approved = models.BooleanField(default=False)
    # A client peer (a stock A2A client) authenticates with a bearer token, kept hashed.
    token_hash = models.CharField(max_length=64, blank=True)
    reachable = models.BooleanField(default=True)
    # Since when it cannot be reached (a failed probe or delivery; null: it answers), and
    # the last probe's round trip (DESIGN.md H10; the Realms page shows both).
    unreachable_since = models.DateTimeField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    probed_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]
        permissions = [("pair_peer", "Can pair, approve, refuse and suspend peer realms")]

    def __str__(self) -> str:
        return self.slug

    def move_to(self, status: str) -> None:
        check_move(self.TRANSITIONS, "peer", self.slug, self.status, status)
        self.status = status
        self.updated_at = timezone.now()

    @property
    def paired(self) -> bool:
        """Heard and called: only an approved peer is (a suspended one is refused at once)."""
        return self.status == self.Status.APPROVED


class Grant(models.Model):
    """What one direction of a pairing allows (default deny: no row, nothing allowed).

    `inbound`: what the peer may ask of this realm (checked here when its call arrives);
    `outbound`: what this realm lets its loops ask of the peer (checked before a call
    leaves). Both sides check, so either realm's admins can narrow the pairing."""

    class Direction(models.TextChoices):
        INBOUND = "inbound"
        OUTBOUND = "outbound"

    class Trace(models.TextChoices):
        SUMMARY = "summary"
        FULL = "full"

    peer = models.ForeignKey(Peer, models.CASCADE, related_name="grants")
    direction = models.CharField(max_length=8, choices=Direction)
    blueprints = models.CharField(max_length=200, default="")  # a name glob; "" allows none
    max_depth = models.PositiveSmallIntegerField(default=1)  # frames a call may add
    # The most one call may spend (the callee's run budget is capped by it); null: no cap.
    budget = models.FloatField(null=True, blank=True)
    rate_per_minute = models.PositiveIntegerField(default=60)
    answer_interrupts = models.BooleanField(default=False)
    trace = models.CharField(max_length=8, choices=Trace, default=Trace.SUMMARY)
    # An inbound grant's lease (DESIGN.md H10): the caller unreachable for longer than this,
    # the work it asked for here is paused until it is back.
    lease_s = models.PositiveIntegerField(default=60)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["peer", "direction"], name="grant_one_per_direction")
        ]

    def __str__(self) -> str:
        return f"{self.peer} {self.direction}: {self.blueprints or '(none)'}"


class Outgoing(models.Model):
    """One message to a peer (a call, a cancel, a status push, a pairing step), written in
    the transaction that causes it and delivered by a worker with backoff until the peer
    answers (DESIGN.md section 8, "Nothing lost"). The peer is idempotent by `key`."""

    peer = models.ForeignKey(Peer, models.CASCADE, related_name="outgoing")
    method = models.CharField(max_length=60)  # JSON-RPC method, or "push" for a status push
    params = models.JSONField(default=dict)
    key = models.CharField(max_length=120, unique=True)  # the idempotency key
    run_id = models.BigIntegerField(null=True, blank=True)  # the run it is about, if any
    attempts = models.PositiveIntegerField(default=0)
    due_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)  # refused for good by the peer
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["due_at"],
                name="outgoing_due",
                condition=models.Q(delivered_at=None, failed_at=None),
            )
        ]

    def __str__(self) -> str:
        return f"{self.method} → {self.peer} ({self.key})"


class Incoming(models.Model):
    """A call a peer made here, by its idempotency key: the same key again answers with the
    same task instead of starting a second run (a retried delivery after a lost answer)."""

    peer = models.ForeignKey(Peer, models.CASCADE, related_name="incoming")
    key = models.CharField(max_length=120)
    run_id = models.BigIntegerField(null=True, blank=True)  # the root run it started
    refusal = models.TextField(blank=True)  # why it was REJECTED, if it was
    # Where and how to push the task's status (A2A push notification config).
    push_url = models.URLField(max_length=300, blank=True)
    push_token = models.CharField(max_length=200, blank=True)
    # The halt this realm engaged on the peer's behalf (DESIGN.md H8): the peer's lift lifts
    # it, and only it; a halt of this realm's own is never the peer's to lift.
    halt_id = models.BigIntegerField(null=True, blank=True)
    # When this realm paused the run because the caller could not be reached for longer
    # than the grant's lease (DESIGN.md H10): its return resumes that pause, and only it.
    paused_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["peer", "key"], name="incoming_once_per_key")
        ]

    def __str__(self) -> str:
        return f"{self.peer}:{self.key} → run {self.run_id}"
