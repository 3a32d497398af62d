from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from oversight.management.acting import acting_user, add_user_argument, refusals
from realms.identity import me
from realms.models import Grant, Peer
from realms.services import grants, peers


class Command(BaseCommand):
    help = (
        "This realm and its peers (DESIGN.md section 8): show; pair with a realm by its URL "
        "and fingerprint; approve, refuse or suspend a peer; grant what a peer may call; add "
        "a client peer (a stock A2A client with a token). All but show need the admin role."
    )

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("show", help="this realm's identity and its peers")
        pair = sub.add_parser("pair", help="ask the realm at --url to pair")
        pair.add_argument("--url", required=True)
        pair.add_argument("--fingerprint", required=True, help="SHA256:… as its admins read it")
        for action in ("approve", "refuse", "suspend"):
            one = sub.add_parser(action, help=f"{action} a peer")
            one.add_argument("slug")
            if action == "suspend":
                one.add_argument("--reason", default="")
        grant = sub.add_parser("grant", help="set one direction's grant of a peer")
        grant.add_argument("slug")
        grant.add_argument("--direction", required=True, choices=Grant.Direction.values)
        grant.add_argument("--blueprints", required=True, help='name globs, "" for none')
        grant.add_argument("--max-depth", type=int, default=1)
        grant.add_argument("--budget", type=float, default=None, help="per call; none: no cap")
        grant.add_argument("--rate", type=int, default=60, help="calls a minute")
        grant.add_argument("--answer-interrupts", action="store_true")
        grant.add_argument("--trace", choices=Grant.Trace.values, default="summary")
        grant.add_argument(
            "--lease", type=int, default=60, help="inbound: seconds the caller may be away"
        )
        client = sub.add_parser("client", help="add a client peer; prints its token once")
        client.add_argument("slug")
        for action in sub.choices.values():
            add_user_argument(action)

    def handle(self, *args, action: str, user: str | None = None, **options) -> None:
        if action == "show":
            self._show()
            return
        needed = "realms.change_grant" if action == "grant" else "realms.pair_peer"
        actor = acting_user(user, needed)
        with refusals():
            if action == "pair":
                peer = peers.realm_pair(
                    actor=actor, url=options["url"], fingerprint=options["fingerprint"]
                )
                self.stdout.write(f"Asked {peer.slug} ({peer.url}) to pair: {peer.status}.")
            elif action in ("approve", "refuse"):
                service = peers.realm_approve if action == "approve" else peers.realm_refuse
                peer = service(actor=actor, slug=options["slug"])
                self.stdout.write(f"{peer.slug}: {peer.status}.")
            elif action == "suspend":
                peer = peers.realm_suspend(
                    actor=actor, slug=options["slug"], reason=options["reason"]
                )
                self.stdout.write(f"{peer.slug}: {peer.status}.")
            elif action == "grant":
                self._grant(actor, options)
            elif action == "client":
                peer, token = peers.client_add(actor=actor, slug=options["slug"])
                self.stdout.write(f"Client peer {peer.slug} added. Its token (shown once):")
                self.stdout.write(token)

    def _grant(self, actor, options) -> None:
        if options["max_depth"] < 1 or (options["budget"] or 0) < 0 or options["rate"] < 1:
            raise CommandError("--max-depth and --rate must be ≥ 1, --budget ≥ 0")
        if not 5 <= options["lease"] <= 86_400:
            raise CommandError("--lease must be between 5 and 86400 seconds")
        peer = peers.peer_get(options["slug"])
        current = grants.grants_of(peer)
        current[options["direction"]] = {
            "blueprints": options["blueprints"],
            "max_depth": options["max_depth"],
            "budget": options["budget"],
            "rate_per_minute": options["rate"],
            "answer_interrupts": options["answer_interrupts"],
            "trace": options["trace"],
            "lease_s": options["lease"],
        }
        grants.grants_set(actor=actor, peer=peer, grants=current)
        self.stdout.write(
            f"{peer.slug} {options['direction']}: {options['blueprints'] or '(none)'}"
        )

    def _show(self) -> None:
        identity = me()
        self.stdout.write(f"Realm {identity.slug} ({identity.name}) at {identity.url}")
        self.stdout.write(f"Fingerprint: {identity.fingerprint}")
        for peer in Peer.objects.all():
            self.stdout.write(
                f"  {peer.slug:<20} {peer.kind:<6} {peer.status:<9} {peer.fingerprint}  "
                f"{peer.url}{'' if peer.reachable else '  (unreachable)'}"
            )
