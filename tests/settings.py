"""console.settings plus what only tests need. Nothing here makes Celery eager or swaps the
Redis channel layer for an in-memory one: the suite runs on the real services."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-not-a-secret")

from console.settings import *  # noqa: E402, F403
from console.settings import CHANNEL_LAYERS  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only
CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] = "test"
