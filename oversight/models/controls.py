"""The controls people hold over loops: halts, circuit breakers and interrupts, each a state
machine whose move method is the only code that changes its state (STYLE.md B.4).
Lock order: Halt → LoopRun → Interrupt → CircuitBreaker."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone

from common.states import check_move
from loops.models import Agent, Blueprint, Domain, Iteration, LoopRun

USER = settings.AUTH_USER_MODEL


class Halt(models.Model):
    """An emergency halt of a scope (DESIGN.md H1): one row per halt, active until lifted."""

    class Kind(models.TextChoices):
        GLOBAL = "global"
        DOMAIN = "domain"
        RUN = "run"

    scope = models.CharField(max_length=120)  # "global" | "domain:<slug>" | "run:<id>"
    kind = models.CharField(max_length=8, choices=Kind)
    domain = models.ForeignKey(Domain, models.PROTECT, null=True, blank=True, related_name="+")
    run = models.ForeignKey(LoopRun, models.PROTECT, null=True, blank=True, related_name="+")
    reason = models.TextField()
    created_by = models.ForeignKey(USER, models.PROTECT, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    parked = models.PositiveIntegerField(default=0)  # runs it moved to halted
    # Lifting a global halt takes two different admins: one asks, another confirms.
    lift_requested_by = models.ForeignKey(
        USER, models.PROTECT, null=True, blank=True, related_name="+"
    )
    lift_requested_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(USER, models.PROTECT, null=True, blank=True, related_name="+")
    confirmed_by = models.ForeignKey(USER, models.PROTECT, null=True, blank=True, related_name="+")
    lifted_at = models.DateTimeField(null=True, blank=True)
    lift_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("engage_halt", "Can halt a domain or a run"),
            ("engage_global_halt", "Can halt everything"),
            ("lift_halt", "Can lift a halt"),
        ]
        constraints = [
            # A second press of the same button finds the first halt instead of a new row.
            models.UniqueConstraint(
                fields=["scope"], condition=Q(lifted_at__isnull=True), name="halt_one_active"
            ),
            models.CheckConstraint(
                condition=Q(kind="global", domain__isnull=True, run__isnull=True)
                | Q(kind="domain", domain__isnull=False, run__isnull=True)
                | Q(kind="run", domain__isnull=True, run__isnull=False),
                name="halt_scope_target",
            ),
        ]
        indexes = [
            models.Index(fields=["kind"], name="halt_active", condition=Q(lifted_at__isnull=True))
        ]

    def __str__(self) -> str:
        return f"halt {self.pk} of {self.scope}"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None


class CircuitBreaker(models.Model):
    """Trips on a metric over a threshold and keeps what it guards from working (H3).

    closed → open (guarded runs paused, the agent left out of broadcasts, an alert) →
    half-open after cooldown_s (one trial) → closed on success, open again on failure.
    Forced open is the operator's kill switch: it stays open until a reset.
    """

    class Scope(models.TextChoices):
        AGENT = "agent"
        BLUEPRINT = "blueprint"
        DOMAIN = "domain"
        PEER = "peer"  # a peer realm: what stops is the messages this realm sends it

    class Metric(models.TextChoices):
        CONSECUTIVE_FAILURES = "consecutive_failures", "Consecutive failed calls"
        ERROR_RATE = "error_rate", "Share of failed calls in the window"
        COST_WINDOW = "cost_window", "Cost of the calls in the window"
        LATENCY = "latency", "Mean call latency in the window (ms)"
        REPORTED_VALUE = "reported_value", "A value the agents report"

    class State(models.TextChoices):
        CLOSED = "closed"
        OPEN = "open"
        HALF_OPEN = "half_open", "Half-open"

    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        State.CLOSED: frozenset({State.OPEN}),
        State.OPEN: frozenset({State.HALF_OPEN, State.CLOSED, State.OPEN}),
        # Half-open again: the trial never reported (its worker died), another is let through.
        State.HALF_OPEN: frozenset({State.CLOSED, State.OPEN, State.HALF_OPEN}),
    }

    name = models.SlugField(max_length=100, unique=True)
    scope = models.CharField(max_length=10, choices=Scope)
    agent = models.ForeignKey(Agent, models.CASCADE, null=True, blank=True, related_name="+")
    blueprint = models.ForeignKey(
        Blueprint, models.CASCADE, null=True, blank=True, related_name="+"
    )
    domain = models.ForeignKey(Domain, models.CASCADE, null=True, blank=True, related_name="+")
    peer = models.CharField(max_length=60, blank=True)  # a peer realm's slug (realms.Peer)
    metric = models.CharField(max_length=24, choices=Metric)
    threshold = models.FloatField()
    window_s = models.PositiveIntegerField(default=60)
    min_calls = models.PositiveIntegerField(default=5)  # before an error rate or mean counts
    value_key = models.CharField(max_length=100, blank=True)  # for reported_value
    cooldown_s = models.PositiveIntegerField(default=30)
    state = models.CharField(max_length=10, choices=State, default=State.CLOSED)
    forced = models.BooleanField(default=False)  # forced open by an operator
    failures = models.PositiveIntegerField(default=0)  # consecutive
    # Recent calls in scope, [[unix time, ok, cost, latency_ms, value], …], trimmed to the
    # window: the breaker row is locked to record a call anyway, so it keeps them itself.
    samples = models.JSONField(default=list, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)  # when it goes half-open
    trial_at = models.DateTimeField(null=True, blank=True)  # the one trial was let through
    trial_run = models.ForeignKey(LoopRun, models.SET_NULL, null=True, blank=True, related_name="+")
    last_reason = models.TextField(blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        permissions = [("reset_circuitbreaker", "Can reset and force circuit breakers")]
        constraints = [
            models.CheckConstraint(
                condition=Q(scope="agent", agent__isnull=False)
                | Q(scope="blueprint", blueprint__isnull=False)
                | Q(scope="domain", domain__isnull=False)
                | (Q(scope="peer") & ~Q(peer="")),
                name="breaker_scope_target",
            ),
            models.CheckConstraint(condition=Q(threshold__gte=0), name="breaker_threshold"),
        ]
        indexes = [
            models.Index(
                fields=["retry_at"], name="breaker_due", condition=Q(state="open", forced=False)
            )
        ]

    def __str__(self) -> str:
        return f"breaker {self.name} ({self.state})"

    @property
    def guards(self) -> str:
        target = self.agent or self.blueprint or self.domain or f"realm {self.peer}"
        return f"{self.scope} {target}"

    def move_to(self, to: str, *, now: datetime, reason: str = "", forced: bool = False) -> None:
        """Validate the move and set what goes with it: an open breaker counts its cooldown
        from now (or waits for an operator when forced); a closed one forgets its calls;
        every move ends the trial in progress."""
        check_move(self.TRANSITIONS, "breaker", self.name, self.state, to)
        self.state, self.updated_at = to, now
        self.trial_at, self.trial_run = None, None
        if to == self.State.OPEN:
            self.forced, self.failures = forced, 0
            self.opened_at, self.retry_at = now, now + timedelta(seconds=self.cooldown_s)
        elif to == self.State.CLOSED:
            self.forced, self.failures, self.samples = False, 0, []
            self.opened_at = self.retry_at = None
        if reason:
            self.last_reason = reason


class Interrupt(models.Model):
    """A decision escalated to a human (DESIGN.md H2, CONCEPTS 37, 40).

    The run waits in `interrupted` until exactly one decision, or the deadline, which
    applies default_action and escalates to the admins.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DECIDED = "decided"
        EXPIRED = "expired"
        WITHDRAWN = "withdrawn"  # its run ended (cancelled, timed out) before anyone decided

    # Exactly one outcome per interrupt (H2): pending is left once, and for good.
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        Status.PENDING: frozenset({Status.DECIDED, Status.EXPIRED, Status.WITHDRAWN}),
        Status.DECIDED: frozenset(),
        Status.EXPIRED: frozenset(),
        Status.WITHDRAWN: frozenset(),
    }

    class Decision(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        MODIFY = "modify"

    class Source(models.TextChoices):
        AGENT = "agent"
        POLICY = "policy"
        BREAKER = "breaker"

    class Severity(models.TextChoices):
        INFO = "info"
        WARNING = "warning"
        CRITICAL = "critical"

    class Tier(models.TextChoices):
        OPERATOR = "operator"
        ADMIN = "admin"

    run = models.ForeignKey(LoopRun, models.CASCADE, related_name="interrupts")
    # The closed iteration whose result waits for the decision; null when the agent raised
    # it through the API between iterations.
    iteration = models.ForeignKey(
        Iteration, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    source = models.CharField(max_length=8, choices=Source)
    agent = models.ForeignKey(Agent, models.SET_NULL, null=True, blank=True, related_name="+")
    breaker = models.ForeignKey(
        CircuitBreaker, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    address = models.JSONField(default=dict)  # domain / main / sub / micro / iteration
    reason = models.TextField()
    rationale = models.TextField(blank=True)  # the agent's
    proposal = models.JSONField(null=True, blank=True)
    proposal_schema = models.JSONField(null=True, blank=True)  # a modify payload must match
    # What the proposal crossed, for the console to say in words (oversight.presenting):
    # {"field", "value", "limit"}, plus "limit_field" when the limit is another field of the
    # proposal (Escalate(over={"dose_mg": "max_dose_mg"})). Null: no limit was crossed.
    limit = models.JSONField(null=True, blank=True)
    severity = models.CharField(max_length=8, choices=Severity, default=Severity.WARNING)
    status = models.CharField(max_length=12, choices=Status, default=Status.PENDING)
    decision = models.CharField(max_length=8, choices=Decision, blank=True)
    payload = models.JSONField(null=True, blank=True)
    comment = models.TextField(blank=True)
    decided_by = models.ForeignKey(USER, models.PROTECT, null=True, blank=True, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    # DESIGN.md H9. Decided in another realm, or by a person who is not a user here: the
    # realm's slug and the person's name ("" when the decision was taken here).
    decided_realm = models.CharField(max_length=60, blank=True)
    decided_by_name = models.CharField(max_length=150, blank=True)
    # A copy, in the calling realm, of an interrupt raised in work it asked a peer for:
    # {"realm", "id", "url"} of the original, which alone decides (null: raised here).
    remote = models.JSONField(null=True, blank=True)
    deadline_at = models.DateTimeField()
    default_action = models.CharField(
        max_length=8, choices=[("approve", "approve"), ("reject", "reject")], default="reject"
    )
    tier = models.CharField(max_length=8, choices=Tier, default=Tier.OPERATOR)
    # Issue 18, the escalation ladder as raised: [{"at", "action", "to", "done_at"}] with
    # absolute times (ISO 8601), so a changed declaration leaves a pending interrupt's ladder
    # as it was; deadline_at and default_action are its last step. Null: no ladder.
    ladder = models.JSONField(null=True, blank=True)
    # When its next rung not yet taken is due (null: none left), for the sweep's index.
    rung_due_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.ForeignKey(USER, models.SET_NULL, null=True, blank=True, related_name="+")
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # Issue 18: how many different people must approve, and from which groups (stored when
    # raised, so that a later change of the declaration leaves a pending one as it was),
    # and the version of the proposal they approve (a modify under a quorum makes a new
    # one, and the count starts again: oversight.services.quorum).
    approvals_needed = models.PositiveSmallIntegerField(default=1)
    approvers_from = models.JSONField(default=list, blank=True)
    proposal_version = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["deadline_at", "id"]
        permissions = [("decide_interrupt", "Can decide interrupts")]
        constraints = [
            # A run waits for one decision at a time. (A remote frame may stand for several
            # runs of a peer, each with its own interrupt: their copies are not limited.)
            models.UniqueConstraint(
                fields=["run"],
                condition=Q(status="pending", remote__isnull=True),
                name="interrupt_one_pending",
            ),
            # One copy of a peer's interrupt, however often its message arrives (H9).
            models.UniqueConstraint(
                KT("remote__realm"), KT("remote__id"), name="interrupt_one_copy"
            ),
            models.CheckConstraint(
                condition=Q(status="pending", decided_at__isnull=True)
                | Q(status__in=["decided", "expired", "withdrawn"], decided_at__isnull=False),
                name="interrupt_decided_at",
            ),
        ]
        indexes = [
            models.Index(
                fields=["deadline_at"], name="interrupt_pending", condition=Q(status="pending")
            ),
            models.Index(
                fields=["rung_due_at"],
                name="interrupt_rung_due",
                condition=Q(status="pending", rung_due_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"interrupt {self.pk} of run {self.run_id} ({self.status})"

    @property
    def is_pending(self) -> bool:
        return self.status == self.Status.PENDING

    @property
    def needs_quorum(self) -> bool:
        return self.approvals_needed > 1

    @property
    def current_approvals(self) -> list[InterruptApproval]:
        """The approvals of the proposal as it stands (prefetch "approvals" to read them
        without a query per interrupt); none without a quorum."""
        if not self.needs_quorum or self.pk is None:
            return []
        return [a for a in self.approvals.all() if a.version == self.proposal_version]

    @property
    def approvals_missing(self) -> int:
        return max(0, self.approvals_needed - len(self.current_approvals))

    def move_to(
        self,
        to: str,
        *,
        at: datetime,
        decision: str = "",
        by: Any = None,
        payload: Any = None,
        comment: str = "",
    ) -> None:
        """Settle it: decided by a person, expired with its default, or withdrawn (its run
        ended). The decision's payload is kept only for a modification."""
        check_move(self.TRANSITIONS, "interrupt", self.pk, self.status, to)
        self.status, self.decided_at, self.decided_by = to, at, by
        self.decision, self.comment = decision, comment
        self.payload = payload if decision == self.Decision.MODIFY else None


class InterruptApproval(models.Model):
    """One person's approval of an interrupt that needs several (issue 18, CONCEPTS 39, 40):
    of one version of its proposal, once per person. `by` names the person as the audit
    does: a username here, or "person@realm" for a peer's operator deciding through a copy
    (DESIGN.md H9), who is no user here. `role`: the group the approval counts for when the
    policy asks for different groups, else the person's console role."""

    interrupt = models.ForeignKey(Interrupt, models.CASCADE, related_name="approvals")
    user = models.ForeignKey(USER, models.PROTECT, null=True, blank=True, related_name="+")
    by = models.CharField(max_length=220)
    role = models.CharField(max_length=150, blank=True)
    version = models.PositiveIntegerField()
    modified = models.BooleanField(default=False)  # approved with a modify: a new version
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]
        constraints = [
            # The same person twice is one approval, whatever the race (the lock says so
            # first, with a 409 naming when they approved).
            models.UniqueConstraint(
                fields=["interrupt", "version", "by"], name="interrupt_approval_once"
            ),
        ]

    def __str__(self) -> str:
        return f"approval of interrupt {self.interrupt_id} by {self.by}"
