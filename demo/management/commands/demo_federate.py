from __future__ import annotations

import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from common.refusals import Refused
from realms.cards import CardInfo, fetch_card
from realms.models import Peer
from realms.services import grants, peers

# What the federated demo's pairing allows, one realm calling the other's exported blueprint:
# depth for the blueprint alone, a rate well above the demo's (a few calls a minute), the
# caller's operators may answer the callee's interrupts (H9) and see its whole trace.
GRANT = {
    "max_depth": 1,
    "budget": None,
    "rate_per_minute": 600,
    "answer_interrupts": True,
    "trace": "full",
    "lease_s": 60,
}


class Command(BaseCommand):
    help = (
        "The federated demo's pairing (./bin/console --federated), as this realm's first admin "
        "would do it, audited like any: --ask pairs with the realm at --peer-url and lets this "
        "realm's loops call its --blueprints (outbound grant), then waits for its approval; "
        "--answer approves that realm's request once it arrives and lets it call "
        "--blueprints here (inbound grant). Both check the other's fingerprint from its "
        "signed card. Done already, it changes nothing."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--peer-url", required=True)
        side = parser.add_mutually_exclusive_group(required=True)
        side.add_argument("--ask", action="store_true", help="this realm calls the peer")
        side.add_argument("--answer", action="store_true", help="the peer calls this realm")
        parser.add_argument("--blueprints", required=True, help="name globs the grant allows")
        parser.add_argument("--timeout", type=float, default=90.0)

    def handle(self, *args, peer_url: str, ask: bool, blueprints: str, timeout: float, **_):
        deadline = time.monotonic() + timeout
        actor = _first_admin()
        card = _wait(deadline, lambda: _card(peer_url), f"no realm answers at {peer_url}")
        if ask:
            peer = _ask(actor, card)
            direction = "outbound"
        else:
            peer = _wait(
                deadline,
                lambda: Peer.objects.filter(fingerprint=card.fingerprint).first(),
                f"no pairing request arrived from {card.slug} ({card.fingerprint})",
            )
            if peer.status == Peer.Status.PENDING and not peer.we_approved:
                peer = peers.realm_approve(actor=actor, slug=peer.slug)
            direction = "inbound"
        wanted = {**grants.grants_of(peer), direction: {"blueprints": blueprints, **GRANT}}
        if wanted != grants.grants_of(peer):
            grants.grants_set(actor=actor, peer=peer, grants=wanted)
        if peer.status == Peer.Status.SUSPENDED:
            self.stdout.write(f"{peer.slug} is suspended here: an admin's choice, left as is")
            return
        approved = _wait(
            deadline,
            lambda: Peer.objects.filter(pk=peer.pk, status=Peer.Status.APPROVED).first(),
            f"{peer.slug} has not approved the pairing (yet)",
        )
        self.stdout.write(
            f"{approved.slug} ({approved.url}, {approved.fingerprint}): approved; "
            f"{direction} grant: {blueprints}"
        )


def _first_admin():
    """The generated admin of the run command (ensure_admin): the first active superuser."""
    admin = (
        get_user_model().objects.filter(is_superuser=True, is_active=True).order_by("pk").first()
    )
    if admin is None:
        raise CommandError("There is no admin account: run `manage.py ensure_admin` first.")
    return admin


def _card(url: str) -> CardInfo | None:
    try:
        return fetch_card(url)
    except Refused as exc:
        if exc.code == "no_realm":  # not up yet
            return None
        raise CommandError(exc.detail) from exc


def _ask(actor, card: CardInfo) -> Peer:
    """Pair unless paired (asked on an earlier start and still pending: ask again, the peer
    hears it once); a suspended peer stays so, an admin's choice."""
    peer = Peer.objects.filter(fingerprint=card.fingerprint).first()
    if peer is not None and (peer.paired or peer.status == Peer.Status.SUSPENDED):
        return peer
    try:
        return peers.realm_pair(actor=actor, url=card.url, fingerprint=card.fingerprint)
    except Refused as exc:
        raise CommandError(exc.detail) from exc


def _wait(deadline: float, probe, failure: str):
    while True:
        if found := probe():
            return found
        if time.monotonic() > deadline:
            raise CommandError(failure)
        time.sleep(0.25)
