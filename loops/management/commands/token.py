from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from console.auth import token_create
from loops.models import Agent


class Command(BaseCommand):
    help = (
        "Create an API token for a user or an agent and print it once. Only its hash is "
        "stored, so a lost token cannot be shown again: create a new one."
    )

    def add_arguments(self, parser) -> None:
        owner = parser.add_mutually_exclusive_group(required=True)
        owner.add_argument("--user", metavar="USERNAME", help="acts as this user")
        owner.add_argument("--agent", metavar="ID", type=int, help="authenticates this agent")

    def handle(self, *args, user: str | None, agent: int | None, **options) -> None:
        if user is not None:
            person = get_user_model().objects.filter(username=user).first()
            if person is None:
                raise CommandError(f"There is no user {user!r}.")
            token, owner = token_create(user=person), str(person)
        else:
            machine = Agent.objects.select_related("domain").filter(pk=agent or 0).first()
            if machine is None:
                raise CommandError(f"There is no agent {agent}.")
            token, owner = token_create(agent=machine), str(machine)
        self.stderr.write(f"A new API token for {owner}; it is shown only this once:")
        self.stdout.write(token)
