"""Loop runs (stack frames) and what happens in them: iterations, bids, contributions, and
the gapless trace of each stack."""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from common.states import check_move
from loops.models.registry import Agent, Blueprint, Domain


class LoopRun(models.Model):
    """One stack frame: a run of a blueprint, with its parent, root and depth."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        WAITING = "waiting"
        INTERRUPTED = "interrupted"
        PAUSED = "paused"
        HALTED = "halted"
        SUCCEEDED = "succeeded"
        EXHAUSTED = "exhausted"
        FAILED = "failed"
        CANCELLED = "cancelled"

    class ExitReason(models.TextChoices):
        # succeeded
        QUALITY = "quality", "Quality exit: the last phase validated"
        SCORE_TARGET = "score_target", "Quality exit: the score reached its target"
        # exhausted
        MAX_ITERATIONS = "max_iterations", "Resource exit: maximum iterations"
        DEADLINE = "deadline", "Resource exit: deadline"
        BUDGET = "budget", "Resource exit: cost budget"
        NO_PROGRESS = "no_progress", "Resource exit: no progress"
        # failed
        VALIDATION_EXHAUSTED = "validation_exhausted", "Validation failed every round"
        INSUFFICIENT_BIDS = "insufficient_bids", "Fewer bids than the quorum"
        MERGE_FAILED = "merge_failed", "The contributions could not be merged"
        CHILD_FAILED = "child_failed", "A child loop did not succeed"
        ERROR = "error", "Non-retryable error"
        # cancelled
        CANCELLED = "cancelled", "Cancelled by an operator"

    TERMINAL: ClassVar[frozenset[str]] = frozenset(
        {State.SUCCEEDED, State.EXHAUSTED, State.FAILED, State.CANCELLED}
    )
    LIVE: ClassVar[frozenset[str]] = frozenset(set(State.values) - TERMINAL)
    _RESUMABLE = frozenset({State.PENDING, State.RUNNING, State.WAITING, State.INTERRUPTED})
    # The only legal moves (DESIGN.md section 3, CONCEPTS A.2). Services call move_to().
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        State.PENDING: frozenset({State.RUNNING, State.PAUSED, State.HALTED, State.CANCELLED}),
        State.RUNNING: frozenset(
            {State.WAITING, State.INTERRUPTED, State.PAUSED, State.HALTED, *TERMINAL}
        ),
        State.WAITING: frozenset(
            {State.RUNNING, State.INTERRUPTED, State.PAUSED, State.HALTED, *TERMINAL}
        ),
        State.INTERRUPTED: frozenset(
            {State.RUNNING, State.PAUSED, State.HALTED, State.FAILED, State.CANCELLED}
        ),
        State.PAUSED: frozenset({*_RESUMABLE, State.HALTED, State.CANCELLED}),
        # Lifting a halt restores the prior state, whatever it was.
        State.HALTED: frozenset({*_RESUMABLE, State.PAUSED}),
        State.SUCCEEDED: frozenset(),
        State.EXHAUSTED: frozenset(),
        State.FAILED: frozenset(),
        State.CANCELLED: frozenset(),
    }

    blueprint = models.ForeignKey(Blueprint, models.PROTECT, related_name="runs")
    domain = models.ForeignKey(Domain, models.PROTECT, related_name="runs")
    # Indexed by looprun_parent and looprun_root (Meta), not twice: every index is written
    # on each insert, and on each update that moves an indexed column.
    parent = models.ForeignKey(
        "self", models.CASCADE, null=True, blank=True, related_name="children", db_index=False
    )
    root = models.ForeignKey(
        "self", models.CASCADE, null=True, blank=True, related_name="descendants", db_index=False
    )
    # The parent's iteration that spawned this child (call-stack return address).
    spawned_by = models.ForeignKey(
        "Iteration", models.SET_NULL, null=True, blank=True, related_name="spawned"
    )
    depth = models.PositiveSmallIntegerField(default=0)
    # Where the parent keeps this child's result (context["children"][call_key]): the
    # blueprint's name, or "<name>#<i>" for the i-th of a beam (CONCEPTS 62).
    call_key = models.CharField(max_length=120, blank=True)
    state = models.CharField(max_length=16, choices=State, default=State.PENDING)
    prior_state = models.CharField(max_length=16, choices=State, blank=True)
    # Who paused it: "user:<name>", or "breaker:<id>" so that closing that breaker resumes
    # exactly the runs it paused.
    paused_by = models.CharField(max_length=60, blank=True)
    phase = models.PositiveSmallIntegerField(default=0)
    iteration = models.PositiveIntegerField(default=0)
    input = models.JSONField(default=dict, blank=True)
    context = models.JSONField(default=dict, blank=True)
    result = models.JSONField(null=True, blank=True)
    exit_reason = models.CharField(max_length=24, choices=ExitReason, blank=True)
    exit_detail = models.TextField(blank=True)
    budget = models.FloatField(null=True, blank=True)
    cost = models.FloatField(default=0)
    # Estimated cost of agent calls and child budgets in flight (CONCEPTS 69).
    cost_reserved = models.FloatField(default=0)
    tokens = models.PositiveIntegerField(default=0)
    deadline_at = models.DateTimeField(null=True, blank=True)
    lease_worker = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Federation (DESIGN.md section 8). origin: the run another realm's frame asked for,
    # {"realm", "run", "root"}, on a root run started over A2A. remote: on a remote frame,
    # the task in another realm that this frame waits on, {"realm", "task", "state"}; the
    # engine never steps such a frame, the peer's answer ends it (realms.services.frames).
    origin = models.JSONField(null=True, blank=True)
    remote = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("operate_looprun", "Can start, pause, resume and cancel loop runs")]
        indexes = [
            models.Index(fields=["domain", "state"], name="looprun_domain_state"),
            models.Index(fields=["root"], name="looprun_root"),
            models.Index(fields=["parent"], name="looprun_parent"),
            # The run lists, newest first (the default ordering), a page at a time.
            models.Index(fields=["-created_at", "-id"], name="looprun_newest"),
            # The reaper scans live runs only.
            models.Index(
                fields=["state", "lease_expires_at"],
                name="looprun_live",
                condition=Q(state__in=["running", "waiting"]),
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(cost_reserved__gte=-1e-9), name="looprun_reserved"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.blueprint_id}, {self.state})"

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL

    def can_move_to(self, to: str) -> bool:
        return to in self.TRANSITIONS[self.state]

    def move_to(self, to: str) -> None:
        """Validate the move and set what goes with it; nothing else assigns state (the
        engine's statements write what this set, and the halt's parking takes its states
        from TRANSITIONS)."""
        check_move(self.TRANSITIONS, "run", self.pk, self.state, to)
        now = timezone.now()
        if to in (self.State.PAUSED, self.State.HALTED):
            self.prior_state = self.state
        elif self.state in (self.State.PAUSED, self.State.HALTED):
            self.prior_state = ""
        if self.state == self.State.PAUSED and to != self.State.HALTED:
            self.paused_by = ""
        if to == self.State.RUNNING and self.started_at is None:
            self.started_at = now
        if to in self.TERMINAL:
            self.finished_at = now
            self.lease_worker, self.lease_expires_at = "", None
        self.state = to
        self.updated_at = now

    @property
    def budget_left(self) -> float | None:
        if self.budget is None:
            return None
        return max(0.0, self.budget - self.cost - self.cost_reserved)


class Iteration(models.Model):
    """One broadcast → bids → selection → contributions → merge → validation cycle."""

    class Status(models.TextChoices):
        BIDDING = "bidding"
        EXECUTING = "executing"
        WAITING_CHILDREN = "waiting_children"
        CLOSED = "closed"

    class Outcome(models.TextChoices):
        VALIDATED = "validated"  # the merged result passed; the phase advances
        REJECTED = "rejected"  # validation failed; the next iteration regenerates
        NO_QUORUM = "no_quorum"
        MERGE_FAILED = "merge_failed"
        ABANDONED = "abandoned"  # the run ended (cancelled, deadline) while it was open

    # Looked up through iteration_unique_number (run, number): no index of its own.
    run = models.ForeignKey(LoopRun, models.CASCADE, related_name="iterations", db_index=False)
    number = models.PositiveIntegerField()
    phase = models.PositiveSmallIntegerField()
    phase_name = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status, default=Status.BIDDING)
    outcome = models.CharField(max_length=16, choices=Outcome, blank=True)
    broadcast = models.JSONField(default=dict)  # task type, payload, capabilities, audience
    bid_window_ends_at = models.DateTimeField()
    gather_deadline_at = models.DateTimeField()
    merged = models.JSONField(null=True, blank=True)
    validation = models.JSONField(default=dict, blank=True)
    feedback = models.JSONField(default=list, blank=True)
    rationale = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="iteration_unique_number")
        ]
        indexes = [
            # The overview's sparklines (started in the last minutes) and the domain page's
            # charts (closed in the last hour) read a recent slice of a large table.
            models.Index(fields=["started_at"], name="iteration_started"),
            models.Index(fields=["closed_at"], name="iteration_closed"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} iteration {self.number}"


class Bid(models.Model):
    """An audience agent's answer to a broadcast: a bid or a decline (CONCEPTS 4)."""

    class Decision(models.TextChoices):
        BID = "bid"
        DECLINE = "decline"

    # Looked up through bid_one_per_agent (iteration, agent): no index of its own.
    iteration = models.ForeignKey(Iteration, models.CASCADE, related_name="bids", db_index=False)
    agent = models.ForeignKey(Agent, models.PROTECT, related_name="bids")
    decision = models.CharField(max_length=8, choices=Decision)
    confidence = models.FloatField(null=True, blank=True)
    est_cost = models.FloatField(default=0)
    reason = models.TextField(blank=True)
    started_at = models.DateTimeField(default=timezone.now)  # when the agent was asked
    received_at = models.DateTimeField(default=timezone.now)
    late = models.BooleanField(default=False)
    selected = models.BooleanField(default=False)
    selection_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["iteration", "received_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["iteration", "agent"], name="bid_one_per_agent"),
            models.CheckConstraint(
                condition=Q(confidence__isnull=True) | Q(confidence__gte=0, confidence__lte=1),
                name="bid_confidence_0_1",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.decision} by agent {self.agent_id} in iteration {self.iteration_id}"


class Contribution(models.Model):
    """A selected agent's work for an iteration, with every attempt recorded."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        COMPLETED = "completed"
        FAILED = "failed"

    # Looked up through contribution_one_per_agent (iteration, agent): no index of its own.
    iteration = models.ForeignKey(
        Iteration, models.CASCADE, related_name="contributions", db_index=False
    )
    agent = models.ForeignKey(Agent, models.PROTECT, related_name="contributions")
    status = models.CharField(max_length=10, choices=Status, default=Status.PENDING)
    output = models.JSONField(null=True, blank=True)
    error_class = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    attempts = models.JSONField(default=list, blank=True)
    est_cost = models.FloatField(default=0)
    confidence = models.FloatField(default=0)  # the agent's bid, weighed by the merge
    cost = models.FloatField(default=0)
    tokens = models.PositiveIntegerField(default=0)
    latency_ms = models.FloatField(null=True, blank=True)
    validated = models.BooleanField(null=True, blank=True)
    late = models.BooleanField(default=False)
    held = models.BooleanField(default=False)  # arrived during a halt; not applied
    # Counted into its agent's AgentStat: set in the transaction that counts it, so a step
    # retried on another worker cannot count it twice (CONCEPTS 64).
    counted = models.BooleanField(default=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["iteration", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["iteration", "agent"], name="contribution_one_per_agent"
            )
        ]
        indexes = [
            # The meta-learning sweep reads the contributions not yet counted (loops.learning).
            models.Index(fields=["id"], name="contribution_uncounted", condition=Q(counted=False)),
            # Calls in flight, which every page's halt banner lists for each active halt.
            models.Index(
                fields=["iteration"],
                name="contribution_in_flight",
                condition=Q(status__in=["pending", "running"]),
            ),
            # The domain page's charts: calls finished in the last hour.
            models.Index(fields=["finished_at"], name="contribution_finished"),
            # The agents page: each agent's latest failures (loops.selectors).
            models.Index(
                F("agent"),
                F("finished_at").desc(nulls_last=True),
                F("id").desc(),
                name="contribution_failures",
                condition=Q(status="failed"),
            ),
        ]

    def __str__(self) -> str:
        return f"contribution of agent {self.agent_id} to iteration {self.iteration_id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in (self.Status.COMPLETED, self.Status.FAILED)


class EventCounter(models.Model):
    """The last Event.seq issued for a root run. A row of its own, locked last in every
    transaction, so that allocating a seq never inverts the parent-before-child order in which
    run rows are locked (which a counter on the root's own row would)."""

    root = models.OneToOneField(LoopRun, models.CASCADE, primary_key=True, related_name="+")
    last_seq = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"trace of run {self.root_id} at {self.last_seq}"


class Event(models.Model):
    """The ordered trace of a loop stack: seq is gapless and increasing per root (CONCEPTS 52)."""

    # Looked up through event_seq_per_root (root, seq): no index of its own.
    root = models.ForeignKey(LoopRun, models.CASCADE, related_name="trace", db_index=False)
    run = models.ForeignKey(LoopRun, models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=40)
    payload = models.JSONField(default=dict)
    ts = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["root", "seq"]
        constraints = [models.UniqueConstraint(fields=["root", "seq"], name="event_seq_per_root")]

    def __str__(self) -> str:
        return f"{self.seq} {self.type}"
