from __future__ import annotations

from django.core.management.base import BaseCommand

from oversight.management.acting import (
    acting_user,
    add_user_argument,
    iso,
    name,
    reason_given,
    refusals,
)
from oversight.models import Halt
from oversight.services.halts import halt_engage


class Command(BaseCommand):
    help = (
        "Emergency halt of a scope: every run in it is parked at once and none starts until "
        "an admin lifts the halt. A global halt needs the admin role."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--scope", required=True, metavar="SCOPE", help="global, domain:<slug> or run:<id>"
        )
        parser.add_argument("--reason", required=True, help="why, for the audit and the alert")
        add_user_argument(parser)

    def handle(self, *args, scope: str, reason: str, user: str | None, **options) -> None:
        is_global = scope.strip() == Halt.Kind.GLOBAL
        perm = "oversight.engage_global_halt" if is_global else "oversight.engage_halt"
        actor = acting_user(user, perm)
        reason_given(reason)
        with refusals():
            halt, created = halt_engage(actor=actor, scope=scope, reason=reason)
        if created:
            self.stdout.write(
                f"Halt {halt.pk} of {halt.scope} engaged at {iso(halt.created_at)}; "
                f"{_runs(halt.parked)} parked."
            )
        else:
            self.stdout.write(
                f"{halt.scope} was already halted: halt {halt.pk} by {name(halt.created_by)} at "
                f"{iso(halt.created_at)} ({halt.reason}), {_runs(halt.parked)} parked then. "
                "Nothing changed."
            )


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"
