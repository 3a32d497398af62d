"""A peer's broadcast reaches this realm (DESIGN.md section 8): `loopstacks/Bid` names the
blueprint that would do the work here and the task. This realm bids or declines by its own
rules, and says why when it declines: the grant it gave the caller, a halt of the
blueprint's domain, its load from that caller, and its own agents' bids for the
blueprint's first phase (the best one's confidence is the realm's)."""

from __future__ import annotations

from typing import Any

from loops.agents import AgentError, adapter_for
from loops.declare import BLUEPRINTS
from loops.messages import Bid, Task
from loops.models import Agent, Domain, LoopRun
from oversight import gates
from realms import grants
from realms.models import Grant, Peer

MAX_LIVE_PER_PEER = 50  # runs a peer's calls may keep live here at once


def bid_received(peer: Peer, params: dict[str, Any]) -> dict[str, Any]:
    blueprint = str(params.get("blueprint", ""))
    spec = BLUEPRINTS.get(blueprint)
    if spec is None or not spec.export or spec.remote or not spec.phases:
        return {"decline": f"this realm exports no blueprint {blueprint!r}"}
    why = grants.refusal(peer, Grant.Direction.INBOUND, grants.Ask(blueprint, depth=1, budget=None))
    if why:
        return {"decline": why}
    domain = Domain.objects.get(slug=spec.domain)
    if halt := gates.halt_for_domain(domain.pk):
        return {"decline": f"{halt.scope} is halted here"}
    live = LoopRun.objects.filter(origin__realm=peer.slug, parent=None).exclude(
        state__in=LoopRun.TERMINAL
    )
    if live.count() >= MAX_LIVE_PER_PEER:
        return {"decline": f"busy: {MAX_LIVE_PER_PEER} runs for realm {peer.slug} are live here"}
    phase = spec.phases[0]
    body = params.get("task")
    task = _task(body if isinstance(body, dict) else {}, phase.task_type)
    best: Bid | None = None
    for agent in Agent.objects.filter(domain=domain, status=Agent.Status.ONLINE).exclude(
        adapter=Agent.Adapter.REALM
    ):
        if not set(phase.capabilities) <= set(agent.capabilities):
            continue
        adapter = adapter_for(agent)
        if adapter is None or adapter.remote:
            continue  # this realm's own in-process agents answer for it within the window
        try:
            answer = adapter.bid(task, 1.0)
        except AgentError:
            continue
        if isinstance(answer, Bid) and (best is None or answer.confidence > best.confidence):
            best = answer
    if best is None:
        return {"decline": f"no agent here bids for {blueprint}"}
    return {"confidence": best.confidence, "est_cost": best.est_cost}


def _task(body: dict[str, Any], task_type: str) -> Task:
    payload, context = body.get("payload"), body.get("context")
    return Task(
        run_id=0,
        iteration=body["iteration"] if isinstance(body.get("iteration"), int) else 0,
        phase=str(body.get("phase", "")),
        task_type=task_type,
        payload=payload if isinstance(payload, dict) else {},
        context=context if isinstance(context, dict) else {},
    )
