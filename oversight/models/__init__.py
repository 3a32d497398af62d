"""The oversight app's models (import direction, STYLE.md B.2: they may import loops.models,
never the reverse)."""

from __future__ import annotations

from oversight.models.controls import CircuitBreaker, Halt, Interrupt, InterruptApproval
from oversight.models.records import Alert, AuditEvent, FailurePattern, Notification

__all__ = [
    "Alert",
    "AuditEvent",
    "CircuitBreaker",
    "FailurePattern",
    "Halt",
    "Interrupt",
    "InterruptApproval",
    "Notification",
]
