"""Failure patterns → guardrails (Loopcraft L3; CONCEPTS 66).

Every failed agent call is counted against its signature. The breakers see each failure
anyway (their error rate and consecutive failures); what this adds is one advisory alert
when the same failure repeats — FAILURE_PATTERN_THRESHOLD times within
FAILURE_PATTERN_WINDOW_S — instead of one per failure. A new alert comes only once that one
is acknowledged and the failure repeats again, or after a quiet window.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from loops.models import Agent
from oversight.models import Alert, FailurePattern
from oversight.services.alerts import alert_raise

_NUMBERS = re.compile(r"\d+(\.\d+)?")


def signature(agent_id: int, error_class: str, message: str) -> str:
    shape = _NUMBERS.sub("#", message.strip().lower())[:300]
    return hashlib.sha256(f"{agent_id}|{error_class}|{shape}".encode()).hexdigest()[:64]


def failures_record(failures: Iterable[tuple[int, str, str]], now: datetime | None = None) -> None:
    """Inside the caller's transaction (the engine's, after the run's lock): count each
    (agent_id, error_class, message) failure, and raise the advisory alert at the threshold."""
    assert transaction.get_connection().in_atomic_block, "failures_record needs a transaction"
    now = now or timezone.now()
    window = timedelta(seconds=settings.FAILURE_PATTERN_WINDOW_S)
    # Sorted by signature: two steps counting the same patterns lock them in the same order.
    for sig, (agent_id, error_class, message) in sorted(
        {signature(*f): f for f in failures}.items()
    ):
        pattern, _ = FailurePattern.objects.select_for_update().get_or_create(
            signature=sig, defaults={"agent_id": agent_id, "error_class": error_class}
        )
        quiet = now - pattern.last_at > window
        acknowledged = pattern.alert is not None and pattern.alert.acknowledged_at is not None
        if quiet or acknowledged:
            pattern.count, pattern.first_at, pattern.alert = 0, now, None
        pattern.count, pattern.last_at, pattern.message = pattern.count + 1, now, message[:2000]
        if pattern.count >= settings.FAILURE_PATTERN_THRESHOLD and pattern.alert is None:
            pattern.alert = _advise(pattern)
        pattern.save()


def _advise(pattern: FailurePattern) -> Alert:
    agent = Agent.objects.select_related("domain").get(pk=pattern.agent_id)
    return alert_raise(
        kind="failure.repeated",
        level=Alert.Level.WARNING,
        title=f"{agent} keeps failing: {pattern.error_class}",
        body=f"{pattern.count} identical failures since {pattern.first_at:%H:%M:%S}: "
        f"{pattern.message[:300]}",
        target=agent,
        data={"signature": pattern.signature, "error_class": pattern.error_class},
    )
