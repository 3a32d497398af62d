"""Cost reservations (CONCEPTS 69): a call's estimated cost, or a child's budget, is set aside
from the run's budget before it is spent, and settled with what it really cost."""

from __future__ import annotations

from django.db.models import F, Q

from loops.models import LoopRun


def cost_reserve(run_id: int, amount: float) -> bool:
    """Atomically set aside amount of the run's budget; False if it does not fit."""
    return bool(
        LoopRun.objects.filter(pk=run_id)
        .filter(Q(budget__isnull=True) | Q(budget__gte=F("cost") + F("cost_reserved") + amount))
        .update(cost_reserved=F("cost_reserved") + amount)
    )


def cost_settle(run_id: int, *, reserved: float, actual: float, tokens: int = 0) -> None:
    LoopRun.objects.filter(pk=run_id).update(
        cost_reserved=F("cost_reserved") - reserved,
        cost=F("cost") + actual,
        tokens=F("tokens") + tokens,
    )


def cost_reserve_locked(run: LoopRun, amount: float) -> bool:
    """cost_reserve on a run the caller holds locked, in memory (the engine's statement
    writes it with the run): nobody else can change its cost meanwhile."""
    if not amount:
        return True
    if run.budget is not None and run.budget < run.cost + run.cost_reserved + amount:
        return False
    run.cost_reserved += amount
    return True
