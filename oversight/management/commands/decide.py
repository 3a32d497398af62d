from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from oversight.management.acting import acting_user, add_user_argument, refusals
from oversight.models import Interrupt
from oversight.services.interrupts import interrupt_decide

_PAST = {"approve": "approved", "reject": "rejected", "modify": "modified"}


class Command(BaseCommand):
    help = (
        "Decide a pending interrupt: approve, reject (--comment says why; the loop is told) "
        "or modify (--payload, JSON matching the proposal's schema). An interrupt that needs "
        "several approvals waits for the others after one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("interrupt", type=int, metavar="INTERRUPT_ID")
        parser.add_argument("decision", choices=Interrupt.Decision.values)
        parser.add_argument("--payload", metavar="JSON", help="the modified proposal")
        parser.add_argument("--comment", default="", help="why; required to reject")
        add_user_argument(parser)

    def handle(
        self,
        *args,
        interrupt: int,
        decision: str,
        payload: str | None,
        comment: str,
        user: str | None,
        **options,
    ) -> None:
        actor = acting_user(user, "oversight.decide_interrupt")
        try:
            value = json.loads(payload) if payload is not None else None
        except json.JSONDecodeError as exc:
            raise CommandError(f"--payload is not valid JSON: {exc}.") from exc
        if not Interrupt.objects.filter(pk=interrupt).exists():
            raise CommandError(f"There is no interrupt {interrupt}.")
        with refusals():
            decided = interrupt_decide(
                interrupt_id=interrupt,
                actor=actor,
                decision=decision,
                payload=value,
                comment=comment,
            )
        if decided.is_pending:  # issue 18: one approval of several; it waits for the others
            self.stdout.write(
                f"Interrupt {decided.pk} {_PAST[decision]} by {actor.get_username()}: "
                f"{len(decided.current_approvals)} of {decided.approvals_needed} approvals; "
                f"{decided.approvals_missing} more needed, from other people."
            )
            return
        self.stdout.write(
            f"Interrupt {decided.pk} {_PAST[decision]} by {actor.get_username()}; "
            f"run {decided.run_id} is {decided.run.state}."
        )
