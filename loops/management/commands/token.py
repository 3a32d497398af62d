from __future__ import annotations

import getpass
import os
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from console.auth import token_issue, token_owner, tokens_revoke, tokens_working
from loops.models import Agent, ApiToken
from oversight.management.acting import acting_user, iso

# Managing people's and agents' credentials is the admin role's (DESIGN.md H6).
USER_PERM = "auth.change_user"
AGENT_PERM = "loops.change_agent"
DEFAULT_GRACE_SECONDS = 3600  # time enough to deploy an agent's new token


class Command(BaseCommand):
    help = (
        "Create an API token for a user or an agent and print it once. Only its hash is "
        "stored, so a lost token cannot be shown again: create a new one. Also rotates "
        "(--rotate: the owner's older tokens work for --grace seconds more), revokes "
        "(--revoke ID, --revoke-all) and lists (--list) tokens, never showing one. Changes "
        "are audited as --as (default: $CONSOLE_USER, else your login name when it names a "
        "console user), who must hold the admin role."
    )

    def add_arguments(self, parser) -> None:
        owner = parser.add_mutually_exclusive_group()
        owner.add_argument("--user", metavar="USERNAME", help="acts as this user")
        owner.add_argument("--agent", metavar="ID", type=int, help="authenticates this agent")
        action = parser.add_mutually_exclusive_group()
        action.add_argument(
            "--rotate", action="store_true", help="a new token; the owner's others expire later"
        )
        action.add_argument("--revoke", metavar="TOKEN_ID", type=int, help="revoke one token now")
        action.add_argument(
            "--revoke-all", action="store_true", help="revoke all the owner's tokens now"
        )
        action.add_argument("--list", action="store_true", help="list tokens (of the owner)")
        parser.add_argument(
            "--grace",
            metavar="SECONDS",
            type=int,
            help="with --rotate: how long the older tokens keep working (default 3600)",
        )
        parser.add_argument(
            "--as", dest="actor", metavar="USERNAME", help="the console user you act as"
        )

    def handle(self, *args, user: str | None, agent: int | None, **options) -> None:
        person, machine = _owner(user, agent)
        if options["grace"] is not None and not options["rotate"]:
            raise CommandError("--grace goes with --rotate.")
        if options["list"]:
            self._list(person, machine)
            return
        if options["revoke"] is not None:
            self._revoke_one(options["revoke"], person, machine, options["actor"])
            return
        if person is None and machine is None:
            raise CommandError("Name the owner: --user USERNAME or --agent ID.")
        actor = _actor(options["actor"], USER_PERM if person is not None else AGENT_PERM)
        if options["revoke_all"]:
            owned = ApiToken.objects.filter(user=person, agent=machine)
            revoked = tokens_revoke(actor=actor, tokens=owned.values_list("pk", flat=True))
            who = f"user {person}" if person is not None else f"agent {machine}"
            ids = ", ".join(str(row.pk) for row in revoked)
            self.stdout.write(
                f"Revoked {len(revoked)} token(s) of {who}: {ids}."
                if revoked
                else f"{who} has no working token; nothing changed."
            )
            return
        grace = options["grace"] if options["grace"] is not None else DEFAULT_GRACE_SECONDS
        self._create(person, machine, actor, grace if options["rotate"] else None)

    def _create(self, person, machine, actor, grace_s: int | None) -> None:
        if grace_s is not None and grace_s < 0:
            raise CommandError(f"--grace must be 0 seconds or more, not {grace_s}.")
        grace = timedelta(seconds=grace_s) if grace_s is not None else None
        row, token, rotated = token_issue(actor=actor, user=person, agent=machine, grace=grace)
        self.stderr.write(f"A new API token for {token_owner(row)}; it is shown only this once:")
        self.stdout.write(token)
        if rotated:
            ids = ", ".join(str(old.pk) for old in rotated)
            ends = iso(rotated[0].revoked_at)
            self.stderr.write(f"The older token(s) {ids} keep working until {ends}.")

    def _revoke_one(self, token_id: int, person, machine, actor_name: str | None) -> None:
        row = ApiToken.objects.select_related("user", "agent__domain").filter(pk=token_id).first()
        if row is None or ((person or machine) and (row.user, row.agent) != (person, machine)):
            owner = f" of {person or machine}" if person or machine else ""
            raise CommandError(f"There is no token {token_id}{owner}.")
        actor = _actor(actor_name, USER_PERM if row.user is not None else AGENT_PERM)
        if tokens_revoke(actor=actor, tokens=[row.pk]):
            self.stdout.write(f"Token {row.pk} of {token_owner(row)} revoked.")
        else:
            self.stdout.write(
                f"Token {row.pk} of {token_owner(row)} stopped working at "
                f"{iso(row.revoked_at)}; nothing changed."
            )

    def _list(self, person, machine) -> None:
        rows = ApiToken.objects.select_related("user", "agent__domain").order_by("pk")
        if person is not None or machine is not None:
            rows = rows.filter(user=person, agent=machine)
        now = timezone.now()
        working = set(rows.filter(tokens_working(now)).values_list("pk", flat=True))
        self.stdout.write("id\towner\tcreated\tlast used\tstate")
        for row in rows:
            if row.revoked_at is None:
                state = "active"
            elif row.pk in working:
                state = f"expires {iso(row.revoked_at)}"
            else:
                state = f"revoked {iso(row.revoked_at)}"
            self.stdout.write(
                f"{row.pk}\t{token_owner(row)}\t{iso(row.created_at)}\t"
                f"{iso(row.last_used_at)}\t{state}"
            )


def _owner(user: str | None, agent: int | None):
    """The user or agent named, or CommandError naming the unknown one."""
    if user is not None:
        person = get_user_model().objects.filter(username=user).first()
        if person is None:
            raise CommandError(f"There is no user {user!r}.")
        return person, None
    if agent is not None:
        machine = Agent.objects.select_related("domain").filter(pk=agent).first()
        if machine is None:
            raise CommandError(f"There is no agent {agent}.")
        return None, machine
    return None, None


def _actor(name: str | None, perm: str):
    """Who the audit names: --as or $CONSOLE_USER, as the operators' commands resolve it
    (oversight.management.acting). Without either, the login name when it names a console
    user; else no one ("system"), so that `manage.py token --user admin` keeps working on a
    fresh install, where shell access to the database is the authority (DESIGN.md section 5).
    """
    if name or os.environ.get("CONSOLE_USER"):
        return acting_user(name, perm)
    user = get_user_model().objects.filter(username=getpass.getuser(), is_active=True).first()
    if user is not None:
        return acting_user(user.get_username(), perm)
    return None
