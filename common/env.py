"""Typed reads of the environment, shared by the settings and the launcher.

A bad value stops the start with a message that names the variable (ImproperlyConfigured
in Django, a plain exit in the launcher), never a traceback deep inside a library.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


class EnvError(ImproperlyConfigured):
    """An environment variable is missing or malformed; the message names it."""


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, "")
    if value == "":
        if default is None:
            raise EnvError(f"Set the {name} environment variable (see .env.example).")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise EnvError(f"{name}={os.environ[name]!r} is not a boolean: use 'true' or 'false'.")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int = 2**31) -> int:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise EnvError(f"{name}={value!r} is not a whole number.") from None
    if not minimum <= number <= maximum:
        raise EnvError(f"{name}={number} is out of range ({minimum}..{maximum}).")
    return number


def env_float(name: str, default: float, *, minimum: float = 0.0, maximum: float = 1e9) -> float:
    value = os.environ.get(name, "").strip()
    if value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise EnvError(f"{name}={value!r} is not a number.") from None
    if not minimum <= number <= maximum:  # also refuses nan
        raise EnvError(f"{name}={value} is out of range ({minimum:g}..{maximum:g}).")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name, "")
    if value.strip() == "":
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_slug(name: str, default: str) -> str:
    value = env_str(name, default)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,59}", value):
        raise EnvError(f"{name}={value!r} is not a slug: lower-case letters, digits and '-'.")
    return value


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    value = env_str(name, default)
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise EnvError(f"{name}={value!r}: the scheme must be one of {', '.join(schemes)}.")
    if parts.scheme != "unix" and not parts.hostname:
        raise EnvError(f"{name}={value!r} names no host.")
    return value


# Where the embedded PostgreSQL and Redis keep their data, the generated secret key and the
# collected static files. Git-ignored; it persists between runs. The ports lie below Linux's
# ephemeral range, where an outgoing connection could hold them by chance.
DATA_DIR = Path(env_str("CONSOLE_DATA_DIR", str(BASE_DIR / ".data")))
EMBEDDED_PG_PORT = env_int("EMBEDDED_PG_PORT", 25432, minimum=1, maximum=65535)
EMBEDDED_REDIS_PORT = env_int("EMBEDDED_REDIS_PORT", 26379, minimum=1, maximum=65535)
EMBEDDED_DATABASE_URL = f"postgres://postgres@127.0.0.1:{EMBEDDED_PG_PORT}/console"
EMBEDDED_REDIS_URL = f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
SECRET_KEY_FILE = DATA_DIR / "secret_key"
