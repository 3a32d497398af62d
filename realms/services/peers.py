"""Pairing, by people (DESIGN.md section 8, H5): an admin of A names B's URL and the
fingerprint B's admins told them; A fetches B's signed card, checks the fingerprint, and
asks; B's admins see the request with A's fingerprint and approve or refuse. Both sides
audit every step. Only approved peers are heard; a suspended peer is refused at once."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.refusals import Refused
from loops.models import Agent
from oversight.audit import audit_record
from oversight.models import CircuitBreaker
from realms import fragments, outbox
from realms.callers import token_hash
from realms.cards import CardInfo, fetch_card
from realms.identity import me
from realms.models import Peer

Status = Peer.Status


def own_info() -> dict[str, str]:
    """What a pairing message says of this realm; the receiver checks the key against the
    message's signature and shows the fingerprint to its admins."""
    identity = me()
    return {
        "slug": identity.slug,
        "name": identity.name,
        "url": identity.url,
        "public_key": identity.public_key,
        "fingerprint": identity.fingerprint,
    }


def peer_get(slug: str) -> Peer:
    peer = Peer.objects.filter(slug=slug).first()
    if peer is None:
        raise Refused(404, "not_found", f"no peer realm {slug!r}")
    return peer


def realm_pair(*, actor, url: str, fingerprint: str) -> Peer:
    """Ask the realm at `url` to pair, once its card proves it holds `fingerprint`'s key."""
    card = fetch_card(url)  # outside the transaction: a network call
    if card.fingerprint != fingerprint.strip():
        raise Refused(
            400,
            "fingerprint_mismatch",
            f"the realm at {url} has the key {card.fingerprint}, not {fingerprint.strip()}: "
            "check the fingerprint with its admins",
        )
    if card.fingerprint == me().fingerprint:
        raise Refused(400, "invalid_request", "that is this realm's own key")
    with transaction.atomic(durable=True):
        peer = _upsert(card)
        before = _state(peer)
        if peer.status == Status.APPROVED:
            raise Refused(409, "already_paired", f"realm {peer.slug} is already paired")
        if peer.status == Status.REFUSED:
            peer.move_to(Status.PENDING)
        peer.we_approved = True
        _settle(peer)
        audit_record(
            actor=actor,
            verb="realm.pair_requested",
            target=peer,
            before=before,
            after=_state(peer),
            data={"url": card.url, "fingerprint": card.fingerprint},
        )
        outbox.queue(peer, "loopstacks/Pair", {"realm": own_info()}, key=f"pair:{uuid.uuid4()}")
    return peer


def pair_received(info: Any) -> Peer:
    """A signed pairing request arrived (its signature verified with the key it carries):
    shown to this realm's admins, or, if ours asked first, the pairing is complete."""
    card = CardInfo.from_message(info)
    with transaction.atomic(durable=True):
        peer = _upsert(card)
        before = _state(peer)
        if peer.status == Status.REFUSED:
            peer.move_to(Status.PENDING)
        if peer.status == Status.PENDING:
            peer.they_approved = True
            _settle(peer)
        audit_record(
            actor=None,
            verb="realm.pair_received",
            target=peer,
            before=before,
            after=_state(peer),
            data={"url": card.url, "fingerprint": card.fingerprint},
        )
    return peer


def realm_approve(*, actor, slug: str) -> Peer:
    """An admin approves a pairing request, or resumes a suspended peer."""
    with transaction.atomic(durable=True):
        peer = Peer.objects.select_for_update().get(pk=peer_get(slug).pk)
        before = _state(peer)
        if peer.status == Status.SUSPENDED:
            peer.move_to(Status.APPROVED)
        elif peer.status == Status.PENDING and not peer.we_approved:
            peer.we_approved = True
            _settle(peer)
            if peer.kind == Peer.Kind.REALM:
                outbox.queue(
                    peer,
                    "loopstacks/PairApproved",
                    {"realm": own_info()},
                    key=f"approved:{uuid.uuid4()}",
                )
        else:
            raise Refused(
                409, "wrong_state", f"realm {slug} is {peer.status}: there is nothing to approve"
            )
        _save(peer)
        audit_record(
            actor=actor, verb="realm.approved", target=peer, before=before, after=_state(peer)
        )
    return peer


def realm_refuse(*, actor, slug: str) -> Peer:
    with transaction.atomic(durable=True):
        peer = Peer.objects.select_for_update().get(pk=peer_get(slug).pk)
        before = _state(peer)
        peer.move_to(Status.REFUSED)
        peer.we_approved = peer.they_approved = False
        _save(peer)
        audit_record(
            actor=actor, verb="realm.refused", target=peer, before=before, after=_state(peer)
        )
        if peer.kind == Peer.Kind.REALM:
            outbox.queue(
                peer, "loopstacks/PairRefused", {"realm": own_info()}, key=f"refused:{uuid.uuid4()}"
            )
    return peer


def realm_suspend(*, actor, slug: str, reason: str = "") -> Peer:
    """From now on the peer's calls are refused, and none of ours leaves for it."""
    with transaction.atomic(durable=True):
        peer = Peer.objects.select_for_update().get(pk=peer_get(slug).pk)
        before = _state(peer)
        peer.move_to(Status.SUSPENDED)
        _save(peer)
        audit_record(
            actor=actor,
            verb="realm.suspended",
            target=peer,
            note=reason,
            before=before,
            after=_state(peer),
        )
    return peer


def answer_received(peer: Peer, method: str) -> None:
    """The peer's admins approved (loopstacks/PairApproved) or refused our request."""
    with transaction.atomic(durable=True):
        peer = Peer.objects.select_for_update().get(pk=peer.pk)
        before = _state(peer)
        if method == "loopstacks/PairApproved" and peer.status == Status.PENDING:
            peer.they_approved = True
            _settle(peer)
        elif method == "loopstacks/PairRefused" and peer.status == Status.PENDING:
            peer.move_to(Status.REFUSED)
            _save(peer)
        else:
            return  # a repeat, or about a pairing that moved on: nothing changes
        verb = "realm.peer_approved" if method.endswith("Approved") else "realm.peer_refused"
        audit_record(actor=None, verb=verb, target=peer, before=before, after=_state(peer))


def _upsert(card: CardInfo) -> Peer:
    """The peer with this key, locked (made if new); its slug must be free for the key."""
    peer = Peer.objects.select_for_update().filter(fingerprint=card.fingerprint).first()
    if peer is None:
        if Peer.objects.filter(slug=card.slug).exists():
            raise Refused(
                409, "slug_taken", f"another realm is already known here as {card.slug!r}"
            )
        try:
            with transaction.atomic():
                peer = Peer.objects.create(
                    slug=card.slug,
                    name=card.name,
                    url=card.url,
                    fingerprint=card.fingerprint,
                    public_key=card.public_key,
                )
        except IntegrityError:  # the same request twice at once: the other one made it
            peer = Peer.objects.select_for_update().get(fingerprint=card.fingerprint)
    peer.name, peer.url = card.name, card.url
    return peer


def _settle(peer: Peer) -> None:
    """Approved once both sides' admins have; saved."""
    if peer.we_approved and peer.they_approved and peer.status == Status.PENDING:
        peer.move_to(Status.APPROVED)
    peer.last_seen_at = timezone.now()
    _save(peer)


def _state(peer: Peer) -> dict[str, object]:
    return {
        "status": peer.status,
        "we_approved": peer.we_approved,
        "they_approved": peer.they_approved,
    }


def client_add(*, actor, slug: str, name: str = "") -> tuple[Peer, str]:
    """A client peer: a stock A2A client that calls with this token (shown once, kept
    hashed). It starts approved, with no grant: an admin grants it what it may call."""
    token = f"lsc_{secrets.token_urlsafe(32)}"
    with transaction.atomic(durable=True):
        if Peer.objects.filter(slug=slug).exists():
            raise Refused(409, "slug_taken", f"a peer {slug!r} exists already")
        peer = Peer.objects.create(
            slug=slug,
            name=name or slug,
            kind=Peer.Kind.CLIENT,
            fingerprint=f"client:{slug}",
            status=Status.APPROVED,
            we_approved=True,
            they_approved=True,
            token_hash=token_hash(token),
        )
        audit_record(actor=actor, verb="realm.client_added", target=peer, after=_state(peer))
    return peer, token


def _save(peer: Peer) -> None:
    """Save the peer, and tell the broadcast agents that stand for it (adapter "realm")
    where it is and whether it may be called: their bids are asked in threads that open no
    database connection (loops.agents.realm)."""
    peer.save()
    fragments.peers_push()  # the Realms pages, after this transaction commits
    if peer.kind == Peer.Kind.REALM and peer.paired:
        # The peer's breaker (DESIGN.md section 8): five failed deliveries in a row open it.
        CircuitBreaker.objects.get_or_create(
            name=f"peer-{peer.slug}",
            defaults={
                "scope": CircuitBreaker.Scope.PEER,
                "peer": peer.slug,
                "metric": CircuitBreaker.Metric.CONSECUTIVE_FAILURES,
                "threshold": 5,
                "cooldown_s": settings.REALM_BREAKER_COOLDOWN_S,
            },
        )
    for agent in Agent.objects.filter(adapter=Agent.Adapter.REALM, config__realm=peer.slug):
        agent.config = {**agent.config, "url": peer.url, "paired": peer.paired}
        agent.save(update_fields=["config"])


def agents_sync() -> None:
    """After a migrate re-mirrored the declarations (their config has no address)."""
    for peer in Peer.objects.all():
        _save(peer)
