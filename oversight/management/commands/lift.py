from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from oversight.management.acting import (
    acting_user,
    add_user_argument,
    iso,
    name,
    reason_given,
    refusals,
)
from oversight.models import Halt
from oversight.services.halts import halt_lift


class Command(BaseCommand):
    help = (
        "Lift a halt (admin role): the runs it parked go back to what they were doing. A "
        "global halt needs two admins: the first asks, a different one confirms."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("halt", type=int, metavar="HALT_ID")
        parser.add_argument("--reason", required=True, help="why, for the audit")
        add_user_argument(parser)

    def handle(self, *args, halt: int, reason: str, user: str | None, **options) -> None:
        actor = acting_user(user, "oversight.lift_halt")
        reason_given(reason)
        if not Halt.objects.filter(pk=halt).exists():
            raise CommandError(f"There is no halt {halt}.")
        with refusals():
            lifted = halt_lift(halt_id=halt, actor=actor, reason=reason)
        if lifted.is_active:
            self.stdout.write(
                f"{name(lifted.lift_requested_by)} asked to lift the global halt {lifted.pk} at "
                f"{iso(lifted.lift_requested_at)}. It stays active until a different admin "
                f'confirms: manage.py lift {lifted.pk} --reason "..." --user <another admin>'
            )
        elif lifted.confirmed_by is not None:
            self.stdout.write(
                f"The global halt {lifted.pk} is lifted now at {iso(lifted.lifted_at)}: asked by "
                f"{name(lifted.lifted_by)}, confirmed by {name(lifted.confirmed_by)}."
            )
        else:
            self.stdout.write(
                f"Halt {lifted.pk} of {lifted.scope} is lifted now at {iso(lifted.lifted_at)}."
            )
