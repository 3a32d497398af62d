"""The request and response bodies of the oversight endpoints (oversight.api), as
django-ninja Schemas: interrupts and decisions, breakers, halts and lifts, alerts and their
acknowledgement, the audit log; and the patterns the OpenAPI document states for free text
and halt scopes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ninja import Field, Schema
from pydantic import ConfigDict

from common.pagination import Moment
from oversight.services import halts

# Free text people type is capped, so a pasted novel is a clear 400, not a stored megabyte.
TEXT = 2000
# What str.strip() removes, for the patterns below: spelled out, since ECMA's \s, which a
# client's validator reads, differs from Python's (\x1c-\x1f, \x85, \ufeff).
SPACE = (
    "\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029"
    "\\u202f\\u205f\\u3000"
)
# A reason or a comment that says something: a character that str.strip() keeps. The services
# (and halt_engage and halt_lift in oversight.api) refuse one of whitespace only (400
# reason_required); the document states it with this pattern.
NOT_BLANK = f"[^{SPACE}]"


def _username(user) -> str | None:
    return user.get_username() if user is not None else None


# --- Interrupts ---------------------------------------------------------------------------


class RungOut(Schema):
    """A step of an interrupt's escalation ladder (issue 18), as raised: when it is due, what
    it does (remind or escalate), whom it tells (operators, admins or group:<name>), and when
    it was taken (null: not yet, or never, once the interrupt is settled)."""

    at: datetime
    action: str
    to: str
    done_at: datetime | None


class ApprovalOut(Schema):
    by: str  # a username, or "person@realm" for a peer realm's operator
    role: str
    at: datetime


class InterruptOut(Schema):
    id: int
    run: int
    iteration: int | None
    source: str
    agent: str | None
    address: dict[str, Any]
    reason: str
    rationale: str
    proposal: Any
    proposal_schema: dict[str, Any] | None
    severity: str
    status: str
    decision: str
    payload: Any
    comment: str
    decided_by: str | None
    decided_at: datetime | None
    # DESIGN.md H9 (added): the realm where it was decided (null: here), and, for a copy of
    # a peer's interrupt, that interrupt ({"realm", "id", "url"}).
    decided_realm: str | None
    remote: dict[str, Any] | None
    deadline_at: datetime
    default_action: str
    tier: str
    claimed_by: str | None
    claimed_at: datetime | None
    created_at: datetime
    # Issue 17 (added): what the proposal crossed, {"field", "value", "limit"} and
    # "limit_field" when the limit is another field of the proposal; null when none.
    # Issue 18: a budget question's figures, {"kind": "budget", "cost", "budget",
    # "per_iteration", "iterations_left", "projected", "parent", "parent_left",
    # "extend_by"} (loops.engine.budget).
    limit: dict[str, Any] | None
    # Issue 18 (added): the escalation ladder's steps before the deadline, each with at and
    # done_at; empty without a ladder. The deadline and default stay the last step.
    ladder: list[RungOut]

    # Issue 18 (added): how many different people must approve; the approvals of the
    # proposal as it stands (a modify under a quorum starts them again, with a new version).
    approvals_needed: int
    approvals: list[ApprovalOut]
    proposal_version: int

    @staticmethod
    def resolve_approvals(obj) -> list[dict[str, Any]]:
        return [{"by": a.by, "role": a.role, "at": a.at} for a in obj.current_approvals]

    @staticmethod
    def resolve_run(obj) -> int:
        return obj.run_id

    @staticmethod
    def resolve_iteration(obj) -> int | None:
        return obj.address.get("iteration")

    @staticmethod
    def resolve_agent(obj) -> str | None:
        return str(obj.agent) if obj.agent_id else None

    @staticmethod
    def resolve_decided_by(obj) -> str | None:
        return _username(obj.decided_by) or obj.decided_by_name or None

    @staticmethod
    def resolve_decided_realm(obj) -> str | None:
        return obj.decided_realm or None

    @staticmethod
    def resolve_claimed_by(obj) -> str | None:
        return _username(obj.claimed_by)

    @staticmethod
    def resolve_ladder(obj) -> list[dict[str, Any]]:
        return obj.ladder or []


class InterruptIn(Schema):
    run: int
    reason: str = Field(min_length=1, max_length=TEXT)
    proposal: Any = None
    severity: Literal["info", "warning", "critical"] = "warning"
    rationale: str = Field("", max_length=TEXT)


def _when(decision: str, then: dict[str, Any]) -> dict[str, Any]:
    return {
        "if": {"properties": {"decision": {"const": decision}}, "required": ["decision"]},
        "then": then,
    }


class DecisionIn(Schema):
    # What interrupt_decide refuses with a 400, stated for clients (it stays the one check).
    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                # reason_required: a rejection is fed back to the loop, so it says why.
                _when(
                    "reject",
                    {"properties": {"comment": {"pattern": NOT_BLANK}}, "required": ["comment"]},
                ),
                # payload_required: a modification carries what replaces the proposal.
                _when(
                    "modify",
                    {"properties": {"payload": {"not": {"type": "null"}}}, "required": ["payload"]},
                ),
            ]
        }
    )

    decision: Literal["approve", "reject", "modify"]
    payload: Any = Field(
        None,
        description="with modify: what replaces the proposal; it must match the interrupt's "
        "proposal_schema, when it has one (400 invalid_payload). A budget question's "
        "extension, approved or modified, must fit what the run's parent has left when "
        "decided (400 over_remainder)",
    )
    comment: str = Field("", max_length=TEXT, description="with reject: why, for the loop")
    # Issue 18 (added): under a quorum a modify makes a new version of the proposal.
    version: int | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="the proposal_version read; a decision on an older one is refused (409 "
        "proposal_changed). Omitted: the proposal as it stands",
    )


class InterruptFilters(Schema):
    status: Literal["pending", "decided", "expired", "withdrawn"] | None = None
    run: int | None = None


# --- Breakers -----------------------------------------------------------------------------


class BreakerOut(Schema):
    id: int
    name: str
    scope: str
    guards: str
    metric: str
    threshold: float
    window_s: int
    cooldown_s: int
    state: str
    forced: bool
    failures: int
    opened_at: datetime | None
    retry_at: datetime | None
    trial_run: int | None
    last_reason: str
    updated_at: datetime

    @staticmethod
    def resolve_trial_run(obj) -> int | None:
        return obj.trial_run_id


class ReasonIn(Schema):
    reason: str = Field(min_length=1, max_length=TEXT, json_schema_extra={"pattern": NOT_BLANK})


# --- Halts --------------------------------------------------------------------------------


class HaltOut(Schema):
    id: int
    scope: str
    reason: str
    active: bool
    created_by: str | None
    created_at: datetime
    parked: int
    lift_requested_by: str | None
    lift_requested_at: datetime | None
    lifted_by: str | None
    confirmed_by: str | None
    lifted_at: datetime | None
    lift_reason: str

    @staticmethod
    def resolve_active(obj) -> bool:
        return obj.is_active

    @staticmethod
    def resolve_created_by(obj) -> str | None:
        return _username(obj.created_by)

    @staticmethod
    def resolve_lift_requested_by(obj) -> str | None:
        return _username(obj.lift_requested_by)

    @staticmethod
    def resolve_lifted_by(obj) -> str | None:
        return _username(obj.lifted_by)

    @staticmethod
    def resolve_confirmed_by(obj) -> str | None:
        return _username(obj.confirmed_by)


class HaltDetail(HaltOut):
    in_flight: list[dict[str, Any]]

    @staticmethod
    def resolve_in_flight(obj) -> list[dict[str, Any]]:
        return halts.halt_in_flight(obj)


# The scopes of the contract, as the document states them (HaltIn) and halt_engage checks
# them before halts.halt_scope_parse, which takes spaces around a scope too. It took more:
# "run:²" (isdigit() is true, int() fails: a 500, issue 14) and "global:", a global halt
# that the API's admin check, comparing the text with "global", let an operator engage.
HALT_SCOPE = f"^[{SPACE}]*(?:global|domain:[-A-Za-z0-9_]+|run:[0-9]+)[{SPACE}]*$"


class HaltIn(Schema):
    scope: str = Field(
        min_length=1,
        max_length=120,
        description="global, domain:<slug> or run:<id>",
        json_schema_extra={"pattern": HALT_SCOPE},
    )
    reason: str = Field(min_length=1, max_length=TEXT, json_schema_extra={"pattern": NOT_BLANK})


# --- Alerts -------------------------------------------------------------------------------


class AlertOut(Schema):
    id: int
    kind: str
    level: str
    audience: str
    title: str
    body: str
    target_type: str
    target_id: str
    data: dict[str, Any]
    created_at: datetime
    acknowledged_by: str | None
    acknowledged_at: datetime | None

    @staticmethod
    def resolve_acknowledged_by(obj) -> str | None:
        return _username(obj.acknowledged_by)


class AcknowledgeIn(Schema):
    note: str = Field("", max_length=TEXT)


# --- Audit --------------------------------------------------------------------------------


class AuditOut(Schema):
    id: int
    at: datetime
    actor: str
    verb: str
    target_type: str
    target_id: str
    note: str
    before: Any
    after: Any
    data: dict[str, Any]
    # Its place in the hash chain (issue 18); null until the sealer reaches it.
    chain_position: int | None
    chain_hash: str | None

    @staticmethod
    def resolve_actor(obj) -> str:
        return obj.actor_name


class AuditFilters(Schema):
    verb: str | None = Field(None, description="e.g. halt.engaged, or a prefix: halt.")
    actor: str | None = Field(None, description="a username, or system")
    target_type: str | None = Field(None, description="run, interrupt, breaker, halt, agent, alert")
    target_id: str | None = None
    since: Moment | None = None
    until: Moment | None = None


class MismatchOut(Schema):
    id: int = Field(description="the audit row's id")
    position: int = Field(description="its position in the chain")
    check: Literal["position", "prev", "hash"] = Field(
        description="position: a row before it is missing; prev: its link does not name the "
        "previous row's hash; hash: its content changed after it was sealed"
    )
    detail: str


class ChainOut(Schema):
    """The audit log's hash chain, checked from its first row (docs/AUDIT.md)."""

    ok: bool
    verified_up_to: int = Field(description="the last position verified, with all before it")
    last_hash: str = Field(description="that row's hash: an anchor for the next check")
    awaiting_seal: int = Field(description="rows committed and not yet sealed (no failure)")
    mismatch: MismatchOut | None = Field(description="the first row that does not match")
