"""The realms endpoints (DESIGN.md section 8's contract additions): this realm and its peers
(viewer), pairing, approving, refusing and suspending (admin), and the grants (viewer
reads, admin writes). The A2A endpoint itself is realms.a2a, outside /api/v1."""

from __future__ import annotations

from django.http import HttpRequest
from ninja import Path, Router, Status

from console.auth import Needs
from loops.schemas import ErrorOut
from realms.identity import me
from realms.models import Peer
from realms.schemas import GrantsIO, PairIn, PeerOut, RealmsOut, SuspendIn
from realms.services import grants, peers

router = Router(tags=["realms"])
ADMIN = Needs("realms.pair_peer")
# A peer's slug, as realms.models.Peer and REALM_SLUG spell it.
SLUG = Path(..., pattern=r"^[a-z0-9][a-z0-9-]{0,59}$", description="a peer realm's slug")


@router.get("/realms", response={200: RealmsOut}, auth=Needs("realms.view_peer"))
def realm_list(request: HttpRequest) -> dict:
    identity = me()
    return {
        "slug": identity.slug,
        "name": identity.name,
        "url": identity.url,
        "fingerprint": identity.fingerprint,
        "peers": list(Peer.objects.all()),
    }


@router.post(
    "/realms",
    response={201: PeerOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=ADMIN,
)
def realm_pair(request: HttpRequest, body: PairIn) -> Status:
    """Ask the realm at `url` to pair: its card must carry `fingerprint`'s key."""
    peer = peers.realm_pair(actor=request.user, url=body.url, fingerprint=body.fingerprint)
    return Status(201, peer)


@router.post(
    "/realms/{slug}/approve",
    response={200: PeerOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=ADMIN,
)
def realm_approve(request: HttpRequest, slug: str = SLUG) -> Peer:
    return peers.realm_approve(actor=request.user, slug=slug)


@router.post(
    "/realms/{slug}/refuse",
    response={200: PeerOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=ADMIN,
)
def realm_refuse(request: HttpRequest, slug: str = SLUG) -> Peer:
    return peers.realm_refuse(actor=request.user, slug=slug)


@router.post(
    "/realms/{slug}/suspend",
    response={200: PeerOut, 400: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=ADMIN,
)
def realm_suspend(request: HttpRequest, slug: str = SLUG, body: SuspendIn | None = None) -> Peer:
    reason = body.reason if body else ""
    return peers.realm_suspend(actor=request.user, slug=slug, reason=reason)


@router.get(
    "/realms/{slug}/grants",
    response={200: GrantsIO, 400: ErrorOut, 404: ErrorOut},
    auth=Needs("realms.view_peer"),
)
def grant_get(request: HttpRequest, slug: str = SLUG) -> dict:
    return grants.grants_of(peers.peer_get(slug))


@router.put(
    "/realms/{slug}/grants",
    response={200: GrantsIO, 400: ErrorOut, 404: ErrorOut},
    auth=Needs("realms.change_grant"),
)
def grant_put(request: HttpRequest, body: GrantsIO, slug: str = SLUG) -> dict:
    wanted = {
        d: (getattr(body, d).dict() if getattr(body, d) else None) for d in ("inbound", "outbound")
    }
    return grants.grants_set(actor=request.user, peer=peers.peer_get(slug), grants=wanted)
