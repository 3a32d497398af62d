"""The header's pending decisions (issue 17), on every page: read by
oversight.urgent.pending_decisions in one query; pushed to every console riding the
overview's push (common.push.overview_push), and sent only when it changed."""

from __future__ import annotations

import hashlib

from common import redis as shared_redis
from console import fragments
from oversight.urgent import pending_decisions

LAST_PUSHED = "push-last:pending-decisions"
LAST_PUSHED_SECONDS = 3600


def pending_html() -> str:
    """The fragment as pushed (common.push.overview_push names it), or "" when it is what
    was pushed last: the overview's push also follows every frame of a busy stack, and the
    header must not go to every console each time. A page loaded since renders it itself."""
    html = fragments.pending(pending_decisions())
    digest = hashlib.blake2b(html.encode(), digest_size=16).hexdigest()
    client = shared_redis.redis_client()
    last = client.set(LAST_PUSHED, digest, ex=LAST_PUSHED_SECONDS, get=True)
    return "" if last == digest.encode() else html
