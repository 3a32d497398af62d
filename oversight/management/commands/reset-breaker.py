"""manage.py reset-breaker: Django names a command after its module and imports it with
importlib, which takes a file name that is no Python identifier (DESIGN.md section 5 spells
the command with a hyphen). Nothing imports this module by name."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from oversight.management.acting import acting_user, add_user_argument, reason_given, refusals
from oversight.models import CircuitBreaker
from oversight.services.breakers import breaker_force_open, breaker_reset


class Command(BaseCommand):
    help = (
        "Close an open breaker (the runs it paused go on), or with --force-open use it as the "
        "kill switch: open until someone resets it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("breaker", metavar="NAME_OR_ID")
        parser.add_argument("--reason", required=True, help="why, for the audit")
        add_user_argument(parser)
        parser.add_argument(
            "--force-open", action="store_true", help="open it instead, until a reset"
        )

    def handle(
        self, *args, breaker: str, reason: str, user: str | None, force_open: bool, **options
    ) -> None:
        actor = acting_user(user, "oversight.reset_circuitbreaker")
        reason_given(reason)
        row = _breaker(breaker)
        service = breaker_force_open if force_open else breaker_reset
        with refusals():
            done = service(breaker_id=row.pk, actor=actor, reason=reason)
        if force_open:
            self.stdout.write(
                f"Breaker {done.name} ({done.guards}) is forced open until someone resets it."
            )
        else:
            self.stdout.write(
                f"Breaker {done.name} ({done.guards}) is closed; what it paused goes on."
            )


def _breaker(name_or_id: str) -> CircuitBreaker:
    """By name, else by id (a name is a slug and may be all digits: the name wins)."""
    row = CircuitBreaker.objects.filter(name=name_or_id).first()
    if row is None and name_or_id.isdigit():
        row = CircuitBreaker.objects.filter(pk=int(name_or_id)).first()
    if row is None:
        raise CommandError(f"There is no breaker {name_or_id!r}.")
    return row
