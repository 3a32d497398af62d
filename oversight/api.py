"""The oversight endpoints of DESIGN.md section 5: interrupts and decisions, breakers,
halts and lifts, and the audit log; and (added to the contract) the alert feed and its
acknowledgement, and the check of the audit log's hash chain (admin).

Reads need the viewer role. Deciding, resetting and halting a domain or a run need the
operator role, and so does acknowledging an alert; a global halt and every lift need the
admin role (H6). An agent's token holds no role: it can raise an interrupt for a run of its
own domain, and nothing else here. The bodies' Schemas are oversight.schemas.
"""

from __future__ import annotations

from django.db.models import Q
from django.http import Http404, HttpRequest
from ninja import Query, Router, Status

from common.pagination import Page, PageParams, page
from common.refusals import Refused
from console.auth import Needs
from loops.models import LoopRun
from loops.schemas import ErrorOut
from oversight.chain import ChainReport, audit_verify
from oversight.models import Alert, AuditEvent, CircuitBreaker, Halt, Interrupt
from oversight.schemas import (
    AcknowledgeIn,
    AlertOut,
    AuditFilters,
    AuditOut,
    BreakerOut,
    ChainOut,
    DecisionIn,
    HaltDetail,
    HaltIn,
    HaltOut,
    InterruptFilters,
    InterruptIn,
    InterruptOut,
    ReasonIn,
)
from oversight.services import breakers, halts, interrupts
from oversight.services.alerts import alert_acknowledge

router = Router(tags=["oversight"])


# --- Interrupts ---------------------------------------------------------------------------


@router.get(
    "/interrupts",
    response={200: Page[InterruptOut], 400: ErrorOut},
    auth=Needs("oversight.view_interrupt"),
)
def interrupt_list(
    request: HttpRequest, filters: Query[InterruptFilters], paging: Query[PageParams]
) -> dict:
    """The approval queue (status=pending), soonest deadline first."""
    rows = Interrupt.objects.select_related("agent__domain", "decided_by", "claimed_by")
    rows = rows.prefetch_related("approvals")  # issue 18: no query per row for approvals
    if filters.status:
        rows = rows.filter(status=filters.status)
    if filters.run:
        rows = rows.filter(run_id=filters.run)
    return page(request, rows.order_by("deadline_at", "id"), paging)


@router.get(
    "/interrupts/{id}",
    response={200: InterruptOut, 404: ErrorOut},
    auth=Needs("oversight.view_interrupt"),
)
def interrupt_detail(request: HttpRequest, id: int) -> Interrupt:
    return _get(Interrupt.objects.select_related("agent__domain"), id, "interrupt")


AGENTS_RAISE = "Only an agent's token raises an interrupt; people decide them."


@router.post(
    "/interrupts",
    response={201: InterruptOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=Needs(None, agents=True, people_refused=AGENTS_RAISE),
)
def interrupt_raise(request: HttpRequest, body: InterruptIn) -> Status:
    """An agent escalates a decision about a run of its domain (with its own token)."""
    agent = request.auth  # type: ignore[attr-defined]  # an Agent: Needs lets no one else in
    if not LoopRun.objects.filter(pk=body.run).exists():
        raise Http404(f"There is no run {body.run}.")
    interrupt = interrupts.interrupt_raise_by_agent(
        agent=agent,
        run_id=body.run,
        reason=body.reason,
        proposal=body.proposal,
        severity=body.severity,
        rationale=body.rationale,
    )
    return Status(201, interrupt)


@router.post(
    "/interrupts/{id}/decision",
    response={200: InterruptOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=Needs("oversight.decide_interrupt"),
)
def interrupt_decide(request: HttpRequest, id: int, body: DecisionIn) -> Interrupt:
    """Approve, reject (comment required: the loop is told why) or modify (payload checked
    against the proposal's schema). Exactly one decision wins; the others get 409. Under a
    quorum (approvals_needed > 1) an approve short of it answers 200 with the interrupt
    still pending and its approvals; the same person twice gets 409; a modify starts the
    count again (the modifier's approval the first) and any one reject decides."""
    _get(Interrupt.objects, id, "interrupt")
    return interrupts.interrupt_decide(
        interrupt_id=id,
        actor=request.user,
        decision=body.decision,
        payload=body.payload,
        comment=body.comment,
        version=body.version,
    )


@router.post(
    "/interrupts/{id}/claim",
    response={200: InterruptOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=Needs("oversight.decide_interrupt"),
)
def interrupt_claim(request: HttpRequest, id: int) -> Interrupt:
    """Show the others that you are reviewing it ("X is reviewing")."""
    _get(Interrupt.objects, id, "interrupt")
    return interrupts.interrupt_claim(interrupt_id=id, actor=request.user)


# --- Breakers -----------------------------------------------------------------------------


@router.get("/breakers", response=Page[BreakerOut], auth=Needs("oversight.view_circuitbreaker"))
def breaker_list(request: HttpRequest, paging: Query[PageParams], state: str | None = None) -> dict:
    rows = CircuitBreaker.objects.select_related("agent__domain", "blueprint", "domain")
    if state:
        rows = rows.filter(state=state)
    return page(request, rows.order_by("name"), paging)


@router.post(
    "/breakers/{id}/reset",
    response={200: BreakerOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=Needs("oversight.reset_circuitbreaker"),
)
def breaker_reset(request: HttpRequest, id: int, body: ReasonIn) -> CircuitBreaker:
    """Close the breaker (a reason is required); the runs it paused go on."""
    _get(CircuitBreaker.objects, id, "breaker")
    return breakers.breaker_reset(breaker_id=id, actor=request.user, reason=body.reason)


@router.post(
    "/breakers/{id}/force-open",
    response={200: BreakerOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=Needs("oversight.reset_circuitbreaker"),
)
def breaker_force_open(request: HttpRequest, id: int, body: ReasonIn) -> CircuitBreaker:
    """The manual kill switch: open until reset, with no half-open trial."""
    _get(CircuitBreaker.objects, id, "breaker")
    return breakers.breaker_force_open(breaker_id=id, actor=request.user, reason=body.reason)


# --- Halts --------------------------------------------------------------------------------


_HALT_USERS = ("created_by", "lift_requested_by", "lifted_by", "confirmed_by")


@router.post(
    "/halts",
    response={200: HaltOut, 201: HaltOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut},
    auth=Needs("oversight.engage_halt"),
)
def halt_engage(request: HttpRequest, body: HaltIn) -> Status:
    """Halt a scope now: 201 with the commit time as created_at; 200 with the halt that was
    already active for that scope. A global halt needs the admin role (the service says
    so: 403)."""
    halt, created = halts.halt_engage(actor=request.user, scope=body.scope, reason=body.reason)
    return Status(201 if created else 200, halt)


@router.get("/halts", response=Page[HaltOut], auth=Needs("oversight.view_halt"))
def halt_list(request: HttpRequest, paging: Query[PageParams], active: bool | None = None) -> dict:
    rows = Halt.objects.select_related(*_HALT_USERS)
    if active is not None:
        rows = rows.filter(lifted_at__isnull=active)
    return page(request, rows.order_by("-created_at", "-id"), paging)


@router.get(
    "/halts/{id}", response={200: HaltDetail, 404: ErrorOut}, auth=Needs("oversight.view_halt")
)
def halt_detail(request: HttpRequest, id: int) -> Halt:
    """A halt, with the agent calls in its scope that are still in flight."""
    return _get(Halt.objects.select_related(*_HALT_USERS), id, "halt")


@router.post(
    "/halts/{id}/lift",
    response={
        200: HaltOut,
        202: HaltOut,
        400: ErrorOut,
        403: ErrorOut,
        404: ErrorOut,
        409: ErrorOut,
    },
    auth=Needs("oversight.lift_halt"),
)
def halt_lift(request: HttpRequest, id: int, body: ReasonIn) -> Status:
    """Lift a halt (admin, with a reason): 200 once lifted. A global halt answers 202 to the
    first admin, and is lifted when a different admin confirms."""
    _get(Halt.objects, id, "halt")
    halt = halts.halt_lift(halt_id=id, actor=request.user, reason=body.reason)
    return Status(200 if not halt.is_active else 202, halt)


# --- Alerts -------------------------------------------------------------------------------


@router.get(
    "/alerts", response={200: Page[AlertOut], 400: ErrorOut}, auth=Needs("oversight.view_alert")
)
def alert_list(request: HttpRequest, paging: Query[PageParams], acknowledged: bool = False) -> dict:
    """The live feed: unacknowledged alerts, newest first, a page at a time
    (acknowledged=true lists the acknowledged ones instead)."""
    rows = Alert.objects.filter(acknowledged_at__isnull=not acknowledged)
    rows = rows.select_related("acknowledged_by").order_by("-created_at", "-id")
    return page(request, rows, paging)


@router.post(
    "/alerts/{id}/acknowledge",
    response={200: AlertOut, 400: ErrorOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut},
    auth=Needs("oversight.acknowledge_alert"),
)
def alert_acknowledge_api(request: HttpRequest, id: int, body: AcknowledgeIn | None = None):
    """Take the alert out of every console's feed (operator; an optional note is audited).
    Exactly one acknowledgement wins; the others get 409 naming who and when."""
    note = body.note if body is not None else ""
    try:
        return alert_acknowledge(alert_id=id, actor=request.user, note=note)
    except Refused as exc:
        return Status(exc.status, {"error": exc.code, "detail": exc.detail})


# --- Audit --------------------------------------------------------------------------------


@router.get(
    "/audit", response={200: Page[AuditOut], 400: ErrorOut}, auth=Needs("oversight.view_auditevent")
)
def audit_list(
    request: HttpRequest, filters: Query[AuditFilters], paging: Query[PageParams]
) -> dict:
    """The append-only audit log, newest first, filterable."""
    rows = AuditEvent.objects.all()
    if filters.verb:
        verb = filters.verb
        rows = rows.filter(verb__startswith=verb) if verb.endswith(".") else rows.filter(verb=verb)
    if filters.actor:
        rows = rows.filter(actor_name=filters.actor)
    if filters.target_type:
        rows = rows.filter(target_type=filters.target_type)
    if filters.target_id:
        rows = rows.filter(target_id=filters.target_id)
    if filters.since:
        rows = rows.filter(Q(at__gte=filters.since))
    if filters.until:
        rows = rows.filter(at__lt=filters.until)
    return page(request, rows.order_by("-at", "-id"), paging)


@router.get("/audit/verify", response={200: ChainOut}, auth=Needs("oversight.verify_auditevent"))
def audit_chain_verify(request: HttpRequest) -> ChainReport:
    """Check the audit log's hash chain from its first row (admin: it reads every row):
    how far it holds, and the first row that does not match, if any (issue 18)."""
    return audit_verify()


def _get(rows, pk: int, name: str):
    row = rows.filter(pk=pk).first()
    if row is None:
        raise Http404(f"There is no {name} {pk}.")
    return row
