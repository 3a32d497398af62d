"""The loop endpoints of DESIGN.md section 5: domains, blueprints, runs and their stacks,
iterations, the trace, operator controls, and the agent registry.

Reads need the viewer role, writes the operator role (console.roles). Errors raised here or
by the services (common.refusals.Refused, Http404) become the contract's
{"error", "detail"} bodies in console.api. The bodies' Schemas are loops.schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Model
from django.http import Http404, HttpRequest
from ninja import Query, Router, Status
from ninja.errors import HttpError

from common.pagination import Page, PageParams, page, whole
from console.auth import Needs
from loops import selectors, services
from loops.models import Agent, LoopRun
from loops.schemas import (
    AgentOut,
    BlueprintOut,
    DomainOut,
    ErrorOut,
    EventOut,
    HeartbeatOut,
    IterationOut,
    RunCancel,
    RunCreated,
    RunFilters,
    RunOut,
    RunStart,
    RunSummary,
)

router = Router(tags=["loops"])

VIEW = "loops.view_looprun"
OPERATE = "loops.operate_looprun"


@contextmanager
def _or_404(model: type[Model], pk: Any) -> Iterator[None]:
    """Turn a service's DoesNotExist for the object the URL names into a 404 that names it."""
    try:
        yield
    except ObjectDoesNotExist:
        raise Http404(f"There is no {model._meta.verbose_name} {pk}.") from None


# --- Reads --------------------------------------------------------------------------------


@router.get("/domains", response=Page[DomainOut], auth=Needs(VIEW))
def domain_list(request: HttpRequest) -> dict:
    """Domains with their derived state (processing / active / standby) and run counts."""
    return whole(selectors.domain_list_with_counts())


@router.get("/blueprints", response=Page[BlueprintOut], auth=Needs(VIEW))
def blueprint_list(request: HttpRequest, domain: str | None = None) -> dict:
    return whole(list(selectors.blueprint_list(domain=domain)))


@router.get("/runs", response={200: Page[RunSummary], 400: ErrorOut}, auth=Needs(VIEW))
def run_list(request: HttpRequest, filters: Query[RunFilters], paging: Query[PageParams]) -> dict:
    """Runs, newest first; filter by domain slug, state, parent or root run."""
    runs = selectors.run_list(
        domain=filters.domain,
        states=[filters.state] if filters.state else None,
        parent=filters.parent,
        root=filters.root,
    )
    return page(request, runs, paging)


@router.get("/runs/{id}", response={200: RunOut, 404: ErrorOut}, auth=Needs(VIEW))
def run_detail(request: HttpRequest, id: int) -> LoopRun:
    """A run with its place in the stack: parent, root, children, depth."""
    with _or_404(LoopRun, id):
        return selectors.run_get_with_stack(id)


@router.get(
    "/runs/{id}/iterations", response={200: Page[IterationOut], 404: ErrorOut}, auth=Needs(VIEW)
)
def run_iterations(request: HttpRequest, id: int, paging: Query[PageParams]) -> dict:
    """Iterations with their bids, contributions, validation and rationale."""
    with _or_404(LoopRun, id):
        return page(request, selectors.iteration_list_for_run(id), paging)


@router.get("/runs/{id}/events", response={200: Page[EventOut], 404: ErrorOut}, auth=Needs(VIEW))
def run_events(request: HttpRequest, id: int, paging: Query[PageParams], after: int = 0) -> dict:
    """The ordered trace of the run's whole stack; `after` skips the seqs already seen."""
    with _or_404(LoopRun, id):
        return page(request, selectors.event_list_for_run(id, after=after), paging)


@router.get("/agents", response=Page[AgentOut], auth=Needs(VIEW))
def agent_list(request: HttpRequest, domain: str | None = None) -> dict:
    return whole(list(selectors.agent_list(domain=domain)))


# --- Writes -------------------------------------------------------------------------------


@router.post(
    "/domains/{slug}/runs",
    response={201: RunCreated, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 423: ErrorOut},
    auth=Needs(OPERATE),
)
def run_start(request: HttpRequest, slug: str, body: RunStart) -> Status:
    """Start a main loop of the domain; the worker takes it from there. 423 while a halt
    covers the domain."""
    run = services.run_start(
        domain=slug, blueprint=body.blueprint, input=body.input, actor=request.user
    )
    return Status(201, {"id": run.pk})


_CONTROL_RESPONSES = {200: RunOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut}


@router.post("/runs/{id}/pause", response=_CONTROL_RESPONSES, auth=Needs(OPERATE))
def run_pause(request: HttpRequest, id: int) -> LoopRun:
    with _or_404(LoopRun, id):
        return services.run_pause(run_id=id, actor=request.user)


@router.post("/runs/{id}/resume", response=_CONTROL_RESPONSES, auth=Needs(OPERATE))
def run_resume(request: HttpRequest, id: int) -> LoopRun:
    with _or_404(LoopRun, id):
        return services.run_resume(run_id=id, actor=request.user)


@router.post("/runs/{id}/cancel", response=_CONTROL_RESPONSES, auth=Needs(OPERATE))
def run_cancel(request: HttpRequest, id: int, body: RunCancel | None = None) -> LoopRun:
    """Cancel the run and every live run below it."""
    reason = body.reason if body else ""
    with _or_404(LoopRun, id):
        return services.run_cancel(run_id=id, actor=request.user, reason=reason)


@router.post(
    "/agents/{id}/heartbeat",
    response={200: HeartbeatOut, 403: ErrorOut, 404: ErrorOut},
    auth=Needs(OPERATE, agents=True),
)
def agent_heartbeat(request: HttpRequest, id: int) -> Agent:
    """An agent reports that it is alive (with its own token), or an operator for it."""
    _require_own_agent(request, id)
    with _or_404(Agent, id):
        return services.agent_heartbeat(agent_id=id)


def _require_own_agent(request: HttpRequest, agent_id: int) -> None:
    """An agent's token reports its own heartbeat only (a person's role was checked by the
    operation's auth, Needs)."""
    caller = getattr(request, "auth", None)  # set by console.auth for token callers
    if isinstance(caller, Agent) and caller.pk != agent_id:
        raise HttpError(403, "An agent's token can only report that agent's heartbeat.")
