"""Pushable partials of the Realms page (STYLE.md B.7), and the pushes that keep it and the
halt banner live: the services call these after their transactions (one line each).

The peers' fragment is the same for everyone (a push has no user): its approve, refuse
and suspend controls are shown by CSS to admins only (.realms.can-pair), and the views
check the permission."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import redis
from django.template.loader import render_to_string

from common import redis as shared_redis
from common.push import CONSOLE_GROUP, REALMS_GROUP, push_coalesced_on_commit
from loops.models import LoopRun
from loops.services import stack_changed
from oversight import fragments as oversight_fragments
from oversight.models import CircuitBreaker
from oversight.selectors import active_halts
from realms.models import Outgoing, Peer
from realms.selectors import peer_rows

log = logging.getLogger(__name__)

REALM_PEERS = "realms/realms.html#realm-peers"
HALT_METHOD = "loopstacks/Halt"


def peers_context() -> dict[str, Any]:
    """The peers' partial's context, the same for the page, an htmx answer and a push."""
    rows = peer_rows()
    return {"rows": rows, "requests": [row for row in rows if row.asks_to_pair]}


def realm_peers() -> str:
    """The peers' fragment as pushed: read after the commit, then rendered (named by
    peers_push, so that a worker can render a trailing push too)."""
    return render_to_string(REALM_PEERS, {**peers_context(), "oob": True})


def peers_push() -> None:
    """After the transaction that changed a peer, its grants or its pairing: the Realms
    pages get the peers again (coalesced: a burst of changes is one push a window)."""
    push_coalesced_on_commit(REALMS_GROUP, "realm-peers", "realms.fragments.realm_peers")


SHOWN_KEY = "realms:shown"  # what the Realms page showed last (a digest)
REACH_KEY = "realms:reach"  # which peers the live stacks drew as reachable


def peers_maybe_changed() -> None:
    """After a delivery or a probe: push the peers only if what the page shows of their
    reachability, latency or breakers changed (two small reads), not after every
    message, of which a halt's hop sends a hundred. A remote frame toward a peer whose
    reachability changed is drawn so in its domain's live stack: those are pushed too.

    What was shown last is kept in Redis (per realm: a realm has its own Redis database);
    without Redis, everything is pushed."""
    peers = list(
        Peer.objects.order_by("slug").values_list("slug", "status", "reachable", "latency_ms")
    )
    breakers = list(
        CircuitBreaker.objects.filter(scope=CircuitBreaker.Scope.PEER)
        .order_by("peer")
        .values_list("peer", "state")
    )
    shown = _digest((peers, breakers))
    reach = _digest([(slug, reachable) for slug, _, reachable, _ in peers])
    try:
        with shared_redis.redis_client().pipeline() as pipe:
            pipe.getset(SHOWN_KEY, shown)
            pipe.getset(REACH_KEY, reach)
            before_shown, before_reach = pipe.execute()
    except redis.RedisError as exc:
        log.warning("the realms page is pushed without comparing: %s", exc)
        before_shown = before_reach = None
    if before_shown != shown:
        peers_push()
    if before_reach != reach:
        frames = LoopRun.objects.filter(remote__isnull=False).exclude(state__in=LoopRun.TERMINAL)
        for domain_id in frames.order_by().values_list("domain_id", flat=True).distinct():
            stack_changed(domain_id)


def _digest(value: object) -> bytes:
    return hashlib.sha256(repr(value).encode()).hexdigest().encode()


def halt_banner() -> str:
    """The halt banner as pushed (oversight.fragments), for a worker to render too."""
    return oversight_fragments.halt_banner(active_halts())


def delivered(message: Outgoing) -> None:
    """A message reached its peer. A halt's message that landed is one more peer realm
    confirming the halt, which the banner counts (DESIGN.md H8): every page gets the
    banner again (coalesced: a halt's hop into a peer is a message per remote frame)."""
    if message.method == HALT_METHOD:
        push_coalesced_on_commit(CONSOLE_GROUP, "halt-banner", "realms.fragments.halt_banner")
