"""The registry of what loops run on: domains, their agents and blueprints, what the
meta-learning layer knows of each agent, the domains' per-minute activity, API tokens."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Domain(models.Model):
    """A field of work (Healthcare, Education, …) whose main loops run its agents."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    policies = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    class Adapter(models.TextChoices):
        PYTHON = "python", "In-process Python"
        HTTP = "http", "Remote HTTP"
        LLM = "llm", "OpenAI-compatible LLM"
        REALM = "realm", "A peer realm"
        A2A = "a2a", "Any A2A agent"

    class Status(models.TextChoices):
        ONLINE = "online"
        OFFLINE = "offline"
        QUARANTINED = "quarantined"

    domain = models.ForeignKey(Domain, models.PROTECT, related_name="agents")
    name = models.SlugField(max_length=100)
    adapter = models.CharField(max_length=16, choices=Adapter, default=Adapter.PYTHON)
    # For python agents: the registry key of the implementation; for remote ones: URLs etc.
    config = models.JSONField(default=dict, blank=True)
    capabilities = models.JSONField(default=list, blank=True)
    task_types = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=16, choices=Status, default=Status.ONLINE)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    max_concurrency = models.PositiveIntegerField(default=4)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["domain", "name"]
        constraints = [models.UniqueConstraint(fields=["domain", "name"], name="agent_unique_name")]

    def __str__(self) -> str:
        return f"{self.domain.slug}/{self.name}"


class Blueprint(models.Model):
    """The database mirror of a loop blueprint declared in Python (loops.blueprints)."""

    class Kind(models.TextChoices):
        MAIN = "main"
        SUB = "sub"
        MICRO = "micro"

    name = models.SlugField(max_length=100, unique=True)
    version = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=8, choices=Kind)
    domain = models.ForeignKey(Domain, models.PROTECT, related_name="blueprints")
    description = models.TextField(blank=True)
    # phases, selection, quorum, windows, merge, validators, children, policy: as declared.
    spec = models.JSONField(default=dict)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["domain", "kind", "name"]

    def __str__(self) -> str:
        return self.name


class AgentStat(models.Model):
    """What the meta-learning layer knows of an agent for a task type (CONCEPTS 64, 65): a
    Beta(alpha, beta) posterior of its success, with its mean latency and cost. Every terminal
    contribution counts once (Contribution.counted is the guard)."""

    agent = models.ForeignKey(Agent, models.CASCADE, related_name="stats")
    task_type = models.CharField(max_length=100)
    alpha = models.FloatField(default=1.0)  # 1 + successes (a uniform prior)
    beta = models.FloatField(default=1.0)  # 1 + failures
    n = models.PositiveIntegerField(default=0)
    mean_latency_ms = models.FloatField(default=0)
    mean_cost = models.FloatField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["agent", "task_type"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "task_type"], name="agentstat_unique")
        ]

    def __str__(self) -> str:
        return f"{self.agent_id} on {self.task_type}: Beta({self.alpha:g}, {self.beta:g})"

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


class DomainMinute(models.Model):
    """A domain's activity in one minute, for the domain page's charts (loops.charts): the
    iterations closed and how long they took, the agent calls finished, failed and their
    cost. The beat's sweep (loops.rollup.domain_minutes_sweep) recomputes each recent minute
    whole from the source rows, so that the page reads at most 60 rows a chart however busy
    the domain was (issue 8). Percentiles cannot be summed: each row holds its own minute's."""

    domain = models.ForeignKey(Domain, models.CASCADE, related_name="+")
    minute = models.DateTimeField()
    closed = models.PositiveIntegerField(default=0)  # iterations closed (abandoned included)
    p50 = models.FloatField(null=True, blank=True)  # seconds, abandoned ones left out
    p95 = models.FloatField(null=True, blank=True)
    calls = models.PositiveIntegerField(default=0)  # contributions completed or failed
    failed = models.PositiveIntegerField(default=0)
    cost = models.FloatField(default=0)
    swept_at = models.DateTimeField(default=timezone.now)  # the sweep that wrote it last

    class Meta:
        ordering = ["domain", "minute"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "minute"], name="domainminute_unique")
        ]
        indexes = [models.Index(fields=["minute"], name="domainminute_minute")]

    def __str__(self) -> str:
        return f"domain {self.domain_id} at {self.minute:%Y-%m-%d %H:%M}"


class ApiToken(models.Model):
    """A bearer token for the API, stored as its SHA-256 hash; shown once when created."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, null=True, blank=True, related_name="api_tokens"
    )
    agent = models.ForeignKey(
        Agent, models.CASCADE, null=True, blank=True, related_name="api_tokens"
    )
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, agent__isnull=True)
                | Q(user__isnull=True, agent__isnull=False),
                name="apitoken_user_xor_agent",
            )
        ]

    def __str__(self) -> str:
        owner = f"user {self.user_id}" if self.user_id else f"agent {self.agent_id}"
        return f"token of {owner}"
