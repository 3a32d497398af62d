"""What the operators' commands share (DESIGN.md section 5): who acts, with which role, and
the services' refusals as a CommandError with the service's own sentence.

Not a command itself: Django lists only the modules of management/commands.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import CommandError

from common.refusals import Refused
from console.roles import role_for


def add_user_argument(parser) -> None:
    parser.add_argument(
        "--user",
        metavar="USERNAME",
        help="the console user you act as (default: $CONSOLE_USER, else your login name)",
    )


def acting_user(username: str | None, perm: str):
    """The active user a command acts as, if they hold perm: the API's check (console.auth).

    Without --user, the operator's CONSOLE_USER or login name, so that DESIGN.md's
    `manage.py halt --scope global --reason …` works for a person whose names match.
    """
    username = username or os.environ.get("CONSOLE_USER") or getpass.getuser()
    user = get_user_model().objects.filter(username=username).first()
    if user is None or not user.is_active:
        raise CommandError(
            f"There is no active user {username!r}; name the console user you act as with --user."
        )
    if not user.has_perm(perm):
        raise CommandError(f"This needs the {role_for(perm)} role.")
    return user


def reason_given(reason: str) -> str:
    if not reason.strip():
        raise CommandError('A reason is required: --reason "why".')
    return reason


@contextmanager
def refusals() -> Iterator[None]:
    """A refused service call rolled back its durable transaction: say why, exit non-zero."""
    try:
        yield
    except Refused as exc:  # a wrong state too (common.states.TransitionRejected)
        raise CommandError(exc.detail) from exc
    except ObjectDoesNotExist as exc:  # a row vanished meanwhile
        raise CommandError(str(exc)) from exc


def iso(value: datetime | None) -> str:
    """Times as the API gives them: ISO 8601 with microseconds."""
    return value.isoformat(timespec="microseconds") if value is not None else "-"


def name(user) -> str:
    return user.get_username() if user is not None else "-"
