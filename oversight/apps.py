from __future__ import annotations

from django.apps import AppConfig


class OversightConfig(AppConfig):
    """Human control over the loops: interrupts, circuit breakers, emergency halts, alerts,
    notifications, roles and the append-only audit log (DESIGN.md section 4)."""

    name = "oversight"
