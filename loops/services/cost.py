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


# Float noise of summed costs: 1.5 - 0.01 - 1.0 is not quite 0.49. A reservation may pass a
# remainder by no more than this (the reserved column's check constraint allows as much).
EPSILON = 1e-9


def cost_parent_room(run: LoopRun) -> float | None:
    """What the run's parent could still set aside for it: its budget less its cost and
    reservations (the run's own budget among them). None when nothing bounds it: a main
    loop has no parent, and a parent without a budget gives without counting."""
    if run.parent_id is None:
        return None
    row = LoopRun.objects.filter(pk=run.parent_id).values_list("budget", "cost", "cost_reserved")
    budget, cost, reserved = row.get()
    return None if budget is None else max(0.0, budget - cost - reserved)


def cost_extend(run: LoopRun, amount: float) -> str:
    """Extend the budget of a run the caller holds locked by amount (issue 18: a budget
    that asks, CONCEPTS 69), set aside from its parent's remainder as a child's budget is:
    a guarded update, under the parent's row lock (the order a child's return takes: the
    child, then its parent), so that the parent's remainder is never exceeded, however it
    changed since the question was asked. Returns "" when extended, else why not."""
    if run.budget is None:
        return f"run {run.pk} has no budget to extend"
    if not 0 < amount < float("inf"):
        return f"an extension must be a positive amount, not {amount!r}"
    if run.parent_id is not None:
        parent = LoopRun.objects.select_for_update(no_key=True).get(pk=run.parent_id)
        if parent.budget is not None:
            reserved = (
                LoopRun.objects.filter(pk=parent.pk)
                .filter(budget__gte=F("cost") + F("cost_reserved") + amount - EPSILON)
                .update(cost_reserved=F("cost_reserved") + amount)
            )
            if not reserved:
                left = parent.budget_left or 0.0
                return (
                    f"the extension of {amount:g} no longer fits what parent run {parent.pk} "
                    f"has left ({left:g})"
                )
    run.budget += amount
    return ""
