from __future__ import annotations

from django.apps import AppConfig


class DemoConfig(AppConfig):
    """Three domains whose agents compute real things on generated data, fail and slow down
    at configurable rates, and escalate where a person should decide (DEMO_* settings)."""

    name = "demo"
    verbose_name = "Demo domains"
