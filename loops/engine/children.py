"""Child loops (CONCEPTS 8, 9, 19, 26, 43, 62, 69): the spawns a phase calls or a selected
agent asks for, each a new frame of the stack the parent waits on."""

from __future__ import annotations

from typing import Any

from loops.declare import BLUEPRINTS, MAX_STACK_DEPTH
from loops.engine.lease import State
from loops.engine.step import Step
from loops.engine.tx import step_tx
from loops.engine.writes import write_close
from loops.messages import Spawn
from loops.models import Blueprint, Iteration, LoopRun
from loops.services import cost_reserve_locked, create_run
from loops.specs import BlueprintSpec
from realms import frames

Note = tuple[str, dict[str, Any]]  # an event for the spawning run's trace


def spawn(
    step: Step, iteration: Iteration, requests: list[Spawn], notes: list[Note] | None = None
) -> bool:
    """Start the requested children; the parent waits for them. Refused requests (undeclared,
    called twice, too deep, over budget) are recorded with their reason. Returns True when
    nothing was started and none is still running, so the iteration can close at once."""
    spec = step.spec
    assert spec is not None
    with step_tx(step.run.pk) as tx:
        run = step.run = tx.require()
        for kind, payload in notes or []:
            tx.trace.add(run.pk, kind, payload)
        called = run.children.filter(spawned_by=iteration)
        seen = {key or name for key, name in called.values_list("call_key", "blueprint__name")}
        started = 0
        for request in requests:
            refusal = spawn_refusal(run, spec, request, seen)
            budget = None if refusal else child_budget(run, BLUEPRINTS[request.blueprint])
            if budget is False:
                refusal = "the parent's remaining budget cannot cover it"
            if refusal:
                why = {"blueprint": request.blueprint, "reason": refusal}
                tx.trace.add(run.pk, "child.refused", why)
                continue
            seen.add(request.call_key)
            child = create_run(
                BLUEPRINTS[request.blueprint],
                Blueprint.objects.get(name=request.blueprint),
                run.domain,
                input=request.input,
                parent=run,
                spawned_by=iteration,
                budget=budget,
                call_key=request.call_key,
                trace=tx.trace,
            )
            started_now = {"child": child.pk, "blueprint": request.blueprint}
            tx.trace.add(run.pk, "child.started", started_now)
            started += 1
        waits = bool(started) or called.exclude(state__in=LoopRun.TERMINAL).exists()
        if waits:
            iteration.status = Iteration.Status.WAITING_CHILDREN
            run.move_to(State.WAITING)
            run.lease_worker, run.lease_expires_at = "", None
        write_close(run, tx.trace, iteration=iteration if waits else None)
    return not started


def beam(step: Step, iteration: Iteration) -> tuple[list[Spawn], list[Note]]:
    """Tree of Thoughts (CONCEPTS 62): a child for each of the `beam` best thoughts the
    previous phase ranked, the rest pruned; none at the depth bound, where the run is a leaf
    and its best thought stands (judge)."""
    run, spec = step.run, step.spec
    assert spec is not None
    phase = spec.phases[iteration.phase]
    bound = min(MAX_STACK_DEPTH - 1, spec.max_depth if spec.max_depth is not None else 99)
    if run.depth + 1 > bound:
        return [], []
    ranked = run.context.get("phases", {}).get(spec.phases[iteration.phase - 1].name) or []
    kept, pruned = ranked[: phase.beam], ranked[phase.beam :]
    note = {
        "kept": [t["agent"] for t in kept],
        "pruned": [t["agent"] for t in pruned],
        "layer": "validation",
    }
    child = phase.call[0]
    requests = [
        Spawn(child, {"thought": t["output"], "score": t["score"]}, key=f"{child}#{i}")
        for i, t in enumerate(kept, start=1)
    ]
    return requests, [("thoughts.pruned", note)]


def called(step: Step, iteration: Iteration) -> tuple[list[Spawn], list[Note]]:
    """What a call phase asks for: its beam, or each declared child with the call's input."""
    spec = step.spec
    assert spec is not None
    phase = spec.phases[iteration.phase]
    if phase.beam:
        return beam(step, iteration)
    value = call_input(step.run, spec, iteration.phase)
    return [Spawn(name, value) for name in phase.call], []


def call_input(run: LoopRun, spec: BlueprintSpec, phase: int) -> Any:
    """Like a function call's arguments: the previous phase's result, or the run's input."""
    if phase == 0:
        return run.input
    previous = run.context.get("phases", {}).get(spec.phases[phase - 1].name)
    return previous if isinstance(previous, dict) else {"value": previous}


def spawn_refusal(run: LoopRun, spec: BlueprintSpec, request: Spawn, seen: set[str]) -> str:
    if request.blueprint not in spec.children:
        return f"{request.blueprint!r} is not a declared child of {spec.name!r}"
    if request.call_key in seen:
        return f"{request.call_key!r} was already called in this iteration"
    depth = run.depth + 1
    # A run another realm asked for sits as deep as the caller's frame, under its bound
    # (DESIGN.md section 8: depth bounds hold across realms).
    offset, bound = frames.origin_bounds(run, MAX_STACK_DEPTH)
    if offset + depth >= bound or (spec.max_depth is not None and depth > spec.max_depth):
        return f"a child at depth {offset + depth} would pass the depth bound"
    return ""


def child_budget(run: LoopRun, child_spec: BlueprintSpec) -> float | bool | None:
    """The child's budget, reserved from the locked parent's remainder; False if it cannot
    be."""
    wanted = child_spec.policy.exits.budget
    left = run.budget_left
    if left is None:
        return wanted
    budget = left if wanted is None else min(wanted, left)
    if budget <= 0 or not cost_reserve_locked(run, budget):
        return False
    return budget
