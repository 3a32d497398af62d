from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _start_django(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DJANGO_DEBUG", "maybe"),
        ("DATABASE_URL", "mysql://db.example/console"),
        ("REDIS_URL", "redis://"),
        ("EMBEDDED_PG_PORT", "fifty"),
        ("EMAIL_PORT", "70000"),
    ],
)
def test_it_stops_on_a_bad_value_naming_the_variable(variable, value):
    result = _start_django(**{variable: value})

    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode != 0
    assert last_line.startswith("common.env.EnvError: ")  # an ImproperlyConfigured
    assert variable in last_line


def test_it_starts_with_good_values():
    assert _start_django(DJANGO_DEBUG="false").returncode == 0
