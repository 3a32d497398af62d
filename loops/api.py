"""The loop endpoints of DESIGN.md section 5: domains, blueprints, runs and their stacks,
iterations, the trace, operator controls, and the agent registry.

Reads need the viewer role, writes the operator role (console.roles). Errors raised here or
by the services (common.refusals.Refused, Http404) become the contract's
{"error", "detail"} bodies in console.api.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db.models import Model
from django.http import Http404, HttpRequest
from ninja import Field, Query, Router, Schema, Status
from ninja.errors import HttpError
from pydantic import field_validator
from pydantic_core import PydanticCustomError

from common.pagination import Page, PageParams, page, whole
from console.auth import Needs
from loops import selectors, services
from loops.declare import BLUEPRINTS
from loops.models import Agent, LoopRun

router = Router(tags=["loops"])

VIEW = "loops.view_looprun"
OPERATE = "loops.operate_looprun"


class ErrorOut(Schema):
    error: str
    detail: str


@contextmanager
def _or_404(model: type[Model], pk: Any) -> Iterator[None]:
    """Turn a service's DoesNotExist for the object the URL names into a 404 that names it."""
    try:
        yield
    except ObjectDoesNotExist:
        raise Http404(f"There is no {model._meta.verbose_name} {pk}.") from None


# --- Schemas ------------------------------------------------------------------------------


class DomainOut(Schema):
    slug: str
    name: str
    state: str
    counts: dict[str, int]
    runs_live: int


class BlueprintOut(Schema):
    id: int
    name: str
    kind: str
    domain: str
    description: str
    phases: list[dict[str, Any]]
    children: list[str]
    policy: dict[str, Any]
    selection: str
    top_k: int | None
    merge: str
    quorum: int
    max_depth: int | None

    @staticmethod
    def resolve_domain(obj) -> str:
        return obj.domain.slug

    # Everything but the identity columns lives in the declared spec.
    @staticmethod
    def resolve_phases(obj) -> list:
        return obj.spec.get("phases", [])

    @staticmethod
    def resolve_children(obj) -> list:
        return obj.spec.get("children", [])

    @staticmethod
    def resolve_policy(obj) -> dict:
        return obj.spec.get("policy", {})

    @staticmethod
    def resolve_selection(obj) -> str:
        return obj.spec.get("selection", "all")

    @staticmethod
    def resolve_top_k(obj) -> int | None:
        return obj.spec.get("top_k")

    @staticmethod
    def resolve_merge(obj) -> str:
        return obj.spec.get("merge", "")

    @staticmethod
    def resolve_quorum(obj) -> int:
        return obj.spec.get("quorum", 1)

    @staticmethod
    def resolve_max_depth(obj) -> int | None:
        return obj.spec.get("max_depth")


class RunSummary(Schema):
    id: int
    blueprint: str
    kind: str
    domain: str
    parent: int | None
    root: int | None
    depth: int
    state: str
    prior_state: str
    phase: int
    iteration: int
    exit_reason: str
    cost: float
    tokens: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_blueprint(obj) -> str:
        return obj.blueprint.name

    @staticmethod
    def resolve_kind(obj) -> str:
        return obj.blueprint.kind

    @staticmethod
    def resolve_parent(obj) -> int | None:
        return obj.parent_id

    @staticmethod
    def resolve_root(obj) -> int | None:
        return obj.root_id

    @staticmethod
    def resolve_domain(obj) -> str:
        return obj.domain.slug


class RunOut(RunSummary):
    children: list[int]
    input: dict[str, Any]
    context: dict[str, Any]
    result: Any
    exit_detail: str
    budget: float | None

    @staticmethod
    def resolve_children(obj) -> list[int]:
        return [child.pk for child in obj.children.all()]


def _main_loops(schema: dict[str, Any]) -> None:
    # Read when the document is built, after the declarations are loaded. run_start refuses
    # any other name (400 unknown_blueprint or not_a_main_loop), so the document says so.
    schema["enum"] = sorted(name for name, spec in BLUEPRINTS.items() if spec.kind == "main")


class RunStart(Schema):
    blueprint: str = Field(
        description="a main loop the domain declares (GET /api/v1/blueprints?domain=); one "
        "that only another domain declares is a 404",
        json_schema_extra=_main_loops,
    )
    input: dict[str, Any] = Field(default_factory=dict)


class RunCreated(Schema):
    id: int


class RunCancel(Schema):
    reason: str = ""


class RunFilters(Schema):
    domain: str | None = Field(None, description="a domain's slug")
    # The values stated as an enum too, for clients; _known_state says what is wrong in words.
    state: str | None = Field(
        None,
        description=f"one of {', '.join(LoopRun.State.values)}",
        json_schema_extra={"enum": list(LoopRun.State.values)},
    )
    parent: int | None = None
    root: int | None = None

    @field_validator("state")
    @classmethod
    def _known_state(cls, value: str | None) -> str | None:
        if value is not None and value not in LoopRun.State.values:
            raise PydanticCustomError(
                "run_state",
                "{value} is not a run state; use one of {states}",
                {"value": repr(value), "states": ", ".join(LoopRun.State.values)},
            )
        return value


class BidOut(Schema):
    agent: str
    decision: str
    confidence: float | None
    est_cost: float
    reason: str
    started_at: datetime
    received_at: datetime
    late: bool
    selected: bool
    selection_reason: str

    @staticmethod
    def resolve_agent(obj) -> str:
        return obj.agent.name


class ContributionOut(Schema):
    agent: str
    status: str
    output: Any
    error_class: str
    error: str
    attempts: list[Any]
    cost: float
    tokens: int
    latency_ms: float | None
    late: bool
    held: bool
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_agent(obj) -> str:
        return obj.agent.name


class IterationOut(Schema):
    id: int
    number: int
    phase: int
    phase_name: str
    status: str
    outcome: str
    broadcast: dict[str, Any]
    started_at: datetime
    closed_at: datetime | None
    merged: Any
    validation: dict[str, Any]
    feedback: list[Any]
    rationale: str
    bids: list[BidOut]
    contributions: list[ContributionOut]


class EventOut(Schema):
    seq: int
    run: int
    type: str
    payload: dict[str, Any]
    ts: datetime

    @staticmethod
    def resolve_run(obj) -> int:
        return obj.run_id


class AgentOut(Schema):
    id: int
    domain: str
    name: str
    adapter: str
    capabilities: list[str]
    task_types: list[str]
    status: str
    heartbeat_at: datetime | None
    max_concurrency: int

    @staticmethod
    def resolve_domain(obj) -> str:
        return obj.domain.slug


class HeartbeatOut(Schema):
    id: int
    status: str
    heartbeat_at: datetime


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
