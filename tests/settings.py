"""console.settings plus what only tests need. Nothing here makes Celery eager or swaps the
Redis channel layer for an in-memory one: the suite runs on the real services."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-a-secret")

from console.settings import *  # noqa: F403
from console.settings import CELERY_BEAT_SCHEDULE, CHANNEL_LAYERS, DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = "test"  # type: ignore[index]
# Named explicitly so that Daphne's child process in ChannelsLiveServerTestCase, which adds
# the "test_" prefix itself unless TEST.NAME is set, finds the same database.
DATABASES["default"]["TEST"] = {"NAME": f"test_{DATABASES['default']['NAME']}"}

LOOP_DECLARATIONS = [
    "tests.loops.declarations",
    "tests.loops.decl_budget",
    "tests.oversight.decl_interrupts",
    "tests.oversight.decl_breakers",
    "tests.oversight.decl_halts",
    "tests.oversight.decl_commands",
    "tests.loops.decl_remote",
    "tests.realms.decl_realms",
    "demo.declarations",
]
# The demo's loops are declared, for tests/demo, but nothing starts them by itself; and they
# run at full speed, with no injected failure or escalation unless a test asks for one.
DEMO_ENABLED = False
CELERY_BEAT_SCHEDULE.pop("demo-keep-running", None)
DEMO_PACE_SECONDS = 0.0
DEMO_FAILURE_RATE = DEMO_SLOW_RATE = DEMO_ESCALATION_RATE = 0.0
# Short, so the kill-the-worker tests see a dead worker's runs taken over within seconds.
LOOP_LEASE_SECONDS = 3
# A peer realm's breaker goes half-open within seconds (tests/realms: a peer that was down).
REALM_BREAKER_COOLDOWN_S = 3
LOOP_STALE_SECONDS = 10
