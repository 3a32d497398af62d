"""The request and response bodies of the loop endpoints (loops.api), as django-ninja
Schemas: domains, blueprints, runs, iterations with their bids and contributions, events,
agents; and ErrorOut, the {"error", "detail"} body every refusal of the API has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ninja import Field, Schema
from pydantic import field_validator
from pydantic_core import PydanticCustomError

from loops.declare import BLUEPRINTS
from loops.models import LoopRun


# Every refusal's body, oversight.api's as well; console.api documents it for each operation.
class ErrorOut(Schema):
    error: str
    detail: str


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


class RunOrigin(Schema):
    realm: str
    run: int | None
    root: int | None


class RunRemote(Schema):
    realm: str
    task: str
    state: str


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
    # Federation (DESIGN.md section 8): the realm, run and root another realm's frame
    # asked for this run from; on a remote frame, the realm, task and state it waits on.
    origin: RunOrigin | None
    remote: RunRemote | None

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
