"""Oversight under load (`./bin/bench oversight`): a decision's commit to the step that
applies it while 200 runs keep the worker busy, and halts of a domain of 1,000 live runs.

Named after the part it measures; its `oversight.*` imports are the console's app (absolute
imports: this module is bench.oversight)."""

from __future__ import annotations

import time
from typing import Any

from bench.common import REPEATS, admin_user, percentiles, stop_all, wait_for
from console.launcher import _stage


def oversight() -> dict[str, Any]:
    _stage("Measuring oversight: decisions under load, then halts of 1,000 runs")
    return {
        "decision_to_next_step_ms": percentiles(decision_to_next_step_ms(load=200, samples=30)),
        "halt": halt_of_active_runs(runs=1000, repeats=REPEATS * 2),
    }


def decision_to_next_step_ms(load: int, samples: int) -> list[float]:
    """From a decision's commit to the start of the step that applies it, while `load`
    other runs keep the worker's queue full: the urgent queue is what keeps this short."""
    from loops import services
    from loops.models import Event
    from oversight.models import Interrupt
    from oversight.services import interrupts

    admin = admin_user()
    for _ in range(load):
        services.run_start(domain="bench", blueprint="bench-forever", input={})
    run = services.run_start(domain="bench", blueprint="bench-escalate", input={})
    waits = []
    for _ in range(samples):
        pending = wait_for(
            lambda: Interrupt.objects.filter(run=run, status="pending").first(), timeout=120
        )
        decided = interrupts.interrupt_decide(
            interrupt_id=pending.pk, actor=admin, decision="approve"
        )
        applied = wait_for(
            lambda at=decided.decided_at: Event.objects.filter(
                run=run, type="decision.applied", ts__gte=at
            ).first()
        )
        waits.append((applied.ts - decided.decided_at).total_seconds() * 1000)
    stop_all()
    return waits


def halt_of_active_runs(runs: int, repeats: int) -> dict[str, Any]:
    """Halt a domain of `runs` live runs that are stepping on the worker, `repeats` times:
    how long the halt's transaction takes (request to commit, which parks every run), that
    no run is left unhalted at the commit, and that no step starts after it."""
    from loops import services
    from loops.models import Event, LoopRun
    from oversight.services import halts

    admin = admin_user()
    ids = [
        services.run_start(domain="bench", blueprint="bench-forever", input={}).pk
        for _ in range(runs)
    ]
    live = LoopRun.objects.filter(pk__in=ids).exclude(state__in=LoopRun.TERMINAL)
    commit_ms, unhalted, started_after = [], [], 0
    for _ in range(repeats):
        time.sleep(1.0)  # the worker steps them meanwhile
        began = time.perf_counter()
        halt, _ = halts.halt_engage(actor=admin, scope="domain:bench", reason="bench")
        commit_ms.append((time.perf_counter() - began) * 1000)
        unhalted.append(live.exclude(state="halted").count())
        time.sleep(0.5)  # anything that would start after the commit has had its chance
        started_after += Event.objects.filter(
            run_id__in=ids,
            ts__gt=halt.created_at,
            type__in=["iteration.broadcast", "bid.received", "agent.call.requested"],
        ).count()
        halts.halt_lift(halt_id=halt.pk, actor=admin, reason="bench")
    stop_all()
    return {
        "runs": runs,
        "halt_commit_ms": percentiles(commit_ms),
        "runs_not_halted_at_commit": max(unhalted),
        "steps_started_after_commit": started_after,
    }


def rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    decision, halt = results["decision_to_next_step_ms"], results["halt"]
    return [
        (
            "decision → next step, 200 runs queued (ms)",
            f"{decision['median']} / {decision['p99']}",
            "median / p99 (must p99 ≤ 100, aim ≤ 25)",
        ),
        (
            f"halt of {halt['runs']} active runs, request → commit (ms)",
            f"{halt['halt_commit_ms']['median']} / {halt['halt_commit_ms']['p99']}",
            f"median / p99; {halt['runs_not_halted_at_commit']} runs not halted at commit, "
            f"{halt['steps_started_after_commit']} steps after (must p99 ≤ 500, 0 steps)",
        ),
    ]
