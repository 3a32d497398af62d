"""Starting the demo's main loops: a seed (one per domain), and the beat's top-up that keeps
each demo domain working on DEMO_RUNS_PER_DOMAIN cases at a time."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.refusals import Refused
from loops.declare import BLUEPRINTS, MAX_STACK_DEPTH, sync_declarations
from loops.models import LoopRun
from loops.services import run_start
from oversight.models import Halt
from oversight.services.breakers import breakers_sync

logger = logging.getLogger(__name__)

MAIN_LOOPS = {
    "healthcare": "healthcare-care",
    "education": "education-learning",
    "industrial": "industrial-operations",
}
State = LoopRun.State
# A stack with a frame in one of these waits for a person, a breaker or a lift: it does not
# count as working, so the domain goes on with new cases beside it.
_HELD = (State.INTERRUPTED, State.PAUSED, State.HALTED)


def demo_declared() -> bool:
    return all(name in BLUEPRINTS for name in MAIN_LOOPS.values())


def demo_start(*, domain: str) -> LoopRun | None:
    """Start one main loop of a demo domain on a generated case; None while a halt covers
    the domain (that is expected: a halt stops new runs too)."""
    try:
        return run_start(domain=domain, blueprint=MAIN_LOOPS[domain], input={"source": "demo"})
    except Refused as exc:
        if exc.code == "halted":
            return None
        raise


def demo_seed() -> dict[str, LoopRun | None]:
    """Make sure the demo domains, agents and breakers exist; start one main run in each."""
    sync_declarations()
    breakers_sync()
    return {domain: demo_start(domain=domain) for domain in MAIN_LOOPS}


def demo_working(*, domain: str) -> int:
    """Main runs of the domain still working: not ended, and no frame of their stack held."""
    held = LoopRun.objects.filter(domain__slug=domain, state__in=_HELD).values("root_id")
    return (
        LoopRun.objects.filter(
            domain__slug=domain, depth=0, state__in=(State.PENDING, State.RUNNING, State.WAITING)
        )
        .exclude(pk__in=held)
        .count()
    )


def demo_keep_running() -> int:
    """The beat's top-up: start main runs until each demo domain has DEMO_RUNS_PER_DOMAIN
    working; none while DEMO_ENABLED is off or a halt covers the domain. Returns how many."""
    if not settings.DEMO_ENABLED or not demo_declared():
        return 0
    started = 0
    for domain in MAIN_LOOPS:
        for _ in range(settings.DEMO_RUNS_PER_DOMAIN - demo_working(domain=domain)):
            try:
                if demo_start(domain=domain) is None:
                    break  # halted
            except Refused as exc:  # not synced yet (migrate has not run): say so
                logger.warning("demo: no run started in %s: %s", domain, exc.detail)
                break
            started += 1
    return started


def demo_prune(now: datetime | None = None) -> int:
    """Delete the demo's finished stacks that ended more than DEMO_KEEP_HOURS ago, whole
    (a root with its frames, iterations and trace), a thousand at a time; returns how many
    roots. A stack a halt names, or with a frame still live, stays."""
    now = now or timezone.now()
    cutoff = now - timedelta(hours=settings.DEMO_KEEP_HOURS)
    live = LoopRun.objects.exclude(state__in=LoopRun.TERMINAL).values("root_id")
    named = Halt.objects.exclude(run=None).values("run__root_id")
    roots = list(
        LoopRun.objects.filter(domain__slug__in=MAIN_LOOPS, depth=0, finished_at__lt=cutoff)
        .exclude(pk__in=live)
        .exclude(pk__in=named)
        .values_list("pk", flat=True)[:1000]
    )
    with transaction.atomic():
        # Frames first, deepest first: a run's parent and root are protected by its rows.
        for depth in range(MAX_STACK_DEPTH - 1, -1, -1):
            LoopRun.objects.filter(root_id__in=roots, depth=depth).delete()
    return len(roots)
