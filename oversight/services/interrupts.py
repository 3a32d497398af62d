"""Interrupts: a decision escalated to a human (DESIGN.md H2, CONCEPTS 37, 40).

Raised by an agent (in its result, or through the API), by a policy (validation exhausted,
confidence under a floor, a value over a limit) or by a breaker, always in the transaction
that holds the run. The run waits in `interrupted`. Exactly one decision wins: deciders lock
the run, then the interrupt, and the losers find it decided (409 naming who and when). The
decision goes into the run's context; the run's next step applies it (loops.engine).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import jsonschema
from django.db import transaction
from django.utils import timezone

from common.push import INBOX_GROUP, overview_push, push_on_commit
from console import metrics
from loops import services as loop_services
from loops.declare import Escalate
from loops.models import Agent, Iteration, LoopRun
from oversight.audit import audit_record
from oversight.models import Alert, CircuitBreaker, Interrupt
from oversight.services.alerts import alert_raise

State = LoopRun.State
_PAST = {"approve": "approved", "reject": "rejected", "modify": "modified"}
_LEVEL = {
    "info": Alert.Level.INFO,
    "warning": Alert.Level.WARNING,
    "critical": Alert.Level.CRITICAL,
}


class DecisionRejected(Exception):
    """A decision that cannot be taken: HTTP status, contract code and a sentence."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        self.status, self.code, self.detail = status, code, detail
        super().__init__(detail)


def interrupt_raise(
    *,
    run: LoopRun,
    source: str,
    reason: str,
    policy: Escalate,
    proposal: Any = None,
    proposal_schema: dict[str, Any] | None = None,
    severity: str = Interrupt.Severity.WARNING,
    rationale: str = "",
    iteration: Iteration | None = None,
    agent: Agent | None = None,
    breaker: CircuitBreaker | None = None,
    events: list | None = None,
) -> Interrupt:
    """Inside the transaction holding the run (locked): move it to interrupted and record
    what the human must decide, by when, and what happens if nobody does. The trace event
    goes into `events` when the caller writes a batch, else it is written here."""
    assert transaction.get_connection().in_atomic_block, "interrupt_raise needs a transaction"
    before = run.state
    run.move_to(State.INTERRUPTED)
    run.lease_worker, run.lease_expires_at = "", None
    run.save(update_fields=["state", "context", "updated_at", "lease_worker", "lease_expires_at"])
    now = timezone.now()
    interrupt = Interrupt.objects.create(
        run=run,
        iteration=iteration,
        source=source,
        agent=agent,
        breaker=breaker,
        address=stack_address(run, iteration),
        reason=reason,
        rationale=rationale,
        proposal=proposal,
        proposal_schema=proposal_schema,
        severity=severity,
        deadline_at=now + timedelta(seconds=policy.deadline_s),
        default_action=policy.default_action,
        created_at=now,
    )
    # Registered first, so that after commit the inbox push leaves before anything else
    # (the alert's notifications are enqueued after it): operators wait for this one.
    push_on_commit(INBOX_GROUP, lambda: _raised(interrupt))
    overview_push()  # pending approvals
    event = (
        run.pk,
        "interrupt.raised",
        {"interrupt": interrupt.pk, "source": source, "reason": reason},
    )
    if events is not None:
        events.append(event)
    else:
        loop_services.events_write(run.root_id, [event])
    audit_record(
        actor=None,
        verb="interrupt.raised",
        target=interrupt,
        note=reason,
        before={"run_state": before},
        after={"status": interrupt.status, "run_state": run.state},
        data={"source": source, "run": run.pk},
    )
    alert_raise(
        kind="interrupt.raised",
        level=_LEVEL.get(severity, Alert.Level.WARNING),
        title=f"Decision needed: {reason}"[:200],
        body=f"Run {run.pk} ({_where(interrupt.address)}) waits for a decision until "
        f"{interrupt.deadline_at:%H:%M:%S %Z}; if nobody decides, it will {policy.default_action}.",
        target=interrupt,
        data={"run": run.pk, "severity": severity},
    )
    return interrupt


def stack_address(run: LoopRun, iteration: Iteration | None) -> dict[str, Any]:
    """domain / main / sub / micro (each {run, blueprint}) and the iteration."""
    address: dict[str, Any] = {"domain": run.domain.slug}
    node: LoopRun | None = run
    while node is not None:  # at most MAX_STACK_DEPTH frames
        address.setdefault(node.blueprint.kind, {"run": node.pk, "blueprint": node.blueprint.name})
        node = node.parent
    address["iteration"] = iteration.number if iteration else run.iteration
    return address


@loop_services.retry_deadlocks
@transaction.atomic(durable=True)
def interrupt_raise_by_agent(
    *, agent: Agent, run_id: int, reason: str, proposal: Any, severity: str, rationale: str = ""
) -> Interrupt:
    """POST /api/v1/interrupts with an agent's token: only for a run of the agent's domain
    that is running or waiting."""
    from loops.declare import BLUEPRINTS

    run = (
        LoopRun.objects.select_for_update(no_key=True, of=("self",))
        .select_related("blueprint")
        .get(pk=run_id)
    )
    if run.domain_id != agent.domain_id:
        raise DecisionRejected(
            403, "forbidden", f"Agent {agent} belongs to another domain than run {run.pk}."
        )
    if run.state not in (State.RUNNING, State.WAITING):
        raise DecisionRejected(
            409,
            "wrong_state",
            f"Run {run.pk} is {run.state}; only a running or waiting run can be interrupted.",
        )
    spec = BLUEPRINTS.get(run.blueprint.name)
    return interrupt_raise(
        run=run,
        source=Interrupt.Source.AGENT,
        reason=reason,
        policy=spec.policy.escalation if spec else Escalate(),
        proposal=proposal,
        severity=severity,
        rationale=rationale,
        agent=agent,
    )


@loop_services.retry_deadlocks
@transaction.atomic(durable=True)
def interrupt_decide(
    *, interrupt_id: int, actor, decision: str, payload: Any = None, comment: str = ""
) -> Interrupt:
    """Approve, reject (with a reason fed back to the loop) or modify (with a payload that
    matches the proposal's schema). Lock order: the run, then the interrupt."""
    run_id = Interrupt.objects.values_list("run_id", flat=True).get(pk=interrupt_id)
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not interrupt.is_pending:
        raise DecisionRejected(409, "already_decided", already_decided(interrupt))
    if run.is_terminal:  # the withdrawal sweep has not got to it yet
        raise DecisionRejected(
            409, "run_ended", f"Run {run.pk} has ended ({run.state}): there is nothing to decide."
        )
    _check_decision(interrupt, decision, payload, comment)
    interrupt.status, interrupt.decision = Interrupt.Status.DECIDED, decision
    interrupt.payload = payload if decision == Interrupt.Decision.MODIFY else None
    interrupt.comment, interrupt.decided_by, interrupt.decided_at = comment, actor, timezone.now()
    interrupt.save(
        update_fields=["status", "decision", "payload", "comment", "decided_by", "decided_at"]
    )
    metrics.interrupt_decided(interrupt, how="human")
    run_state = _continue(run, interrupt, by=actor.get_username())
    audit_record(
        actor=actor,
        verb=f"interrupt.{_PAST[decision]}",
        target=interrupt,
        note=comment,
        before={"status": Interrupt.Status.PENDING, "proposal": interrupt.proposal},
        after={
            "status": interrupt.status,
            "decision": decision,
            "payload": interrupt.payload,
            "run_state": run_state,
        },
        data={"run": run.pk},
    )
    push_on_commit(INBOX_GROUP, lambda: _card(interrupt.pk))
    overview_push()
    return interrupt


def already_decided(interrupt: Interrupt) -> str:
    if interrupt.status == Interrupt.Status.WITHDRAWN:
        return (
            f"Interrupt {interrupt.pk} was withdrawn at {_iso(interrupt.decided_at)}: "
            f"{interrupt.comment}"
        )
    if interrupt.status == Interrupt.Status.EXPIRED:
        return (
            f"Interrupt {interrupt.pk} expired at {_iso(interrupt.decided_at)}; "
            f"its default ({interrupt.decision}) was applied."
        )
    by = interrupt.decided_by.get_username() if interrupt.decided_by else "system"
    return (
        f"Interrupt {interrupt.pk} was already decided by {by} at "
        f"{_iso(interrupt.decided_at)} ({interrupt.decision})."
    )


def _check_decision(interrupt: Interrupt, decision: str, payload: Any, comment: str) -> None:
    if decision not in Interrupt.Decision.values:
        raise DecisionRejected(
            400,
            "invalid_decision",
            f"{decision!r} is not a decision; use approve, reject or modify.",
        )
    if decision == Interrupt.Decision.REJECT and not comment.strip():
        raise DecisionRejected(
            400, "reason_required", "A rejection needs a comment saying why; the loop is told."
        )
    if decision != Interrupt.Decision.MODIFY:
        return
    if payload is None:
        raise DecisionRejected(400, "payload_required", "A modification needs a payload.")
    if interrupt.proposal_schema:
        problems = [
            f"{'/'.join(map(str, e.absolute_path)) or 'payload'}: {e.message}"
            for e in jsonschema.Draft202012Validator(interrupt.proposal_schema).iter_errors(payload)
        ]
        if problems:
            raise DecisionRejected(
                400,
                "invalid_payload",
                "The payload does not match the proposal's schema: " + "; ".join(problems),
            )


def _continue(run: LoopRun, interrupt: Interrupt, *, by: str) -> str:
    """Hand the decision to the run's next step, and let the run go on (inside the lock).

    A run halted or paused since the interrupt keeps waiting for its lift or resume; it
    will then go on with the decision already in its context.
    """
    run.context["decision"] = {
        "interrupt": interrupt.pk,
        "decision": interrupt.decision,
        "payload": interrupt.payload,
        "proposal": interrupt.proposal,
        "comment": interrupt.comment,
        "by": by,
        "iteration": interrupt.iteration.number if interrupt.iteration else None,
    }
    fields = ["context", "updated_at"]
    if run.state == State.INTERRUPTED:
        run.move_to(loop_services.resume_target(run, State.RUNNING))
        fields += ["state", "started_at"]
        if run.state == State.RUNNING:
            loop_services.enqueue(run.pk, urgent=True)
    elif run.prior_state == State.INTERRUPTED:
        run.prior_state = State.RUNNING
        fields.append("prior_state")
    run.save(update_fields=fields)
    loop_services.events_write(
        run.root_id,
        [
            (
                run.pk,
                "interrupt.decided",
                {"interrupt": interrupt.pk, "decision": interrupt.decision, "by": by},
            )
        ],
    )
    return run.state


@transaction.atomic(durable=True)
def interrupt_claim(*, interrupt_id: int, actor) -> Interrupt:
    """ "X is reviewing": a visible claim, not a lock; anyone with the role may still decide."""
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not interrupt.is_pending:
        raise DecisionRejected(409, "already_decided", already_decided(interrupt))
    interrupt.claimed_by, interrupt.claimed_at = actor, timezone.now()
    interrupt.save(update_fields=["claimed_by", "claimed_at"])
    audit_record(actor=actor, verb="interrupt.claimed", target=interrupt)
    push_on_commit(INBOX_GROUP, lambda: _card(interrupt.pk))
    return interrupt


@loop_services.retry_deadlocks
@transaction.atomic(durable=True)
def interrupt_expire(*, interrupt_id: int, now: datetime | None = None) -> Interrupt | None:
    """Past its deadline: apply the default, audit it, and escalate to the admins."""
    now = now or timezone.now()
    run_id = Interrupt.objects.values_list("run_id", flat=True).get(pk=interrupt_id)
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not interrupt.is_pending or interrupt.deadline_at > now:
        return None  # decided meanwhile, or not due: another sweep got there first
    if run.is_terminal:
        return None  # nothing to apply a default to: interrupts_withdraw_ended takes it
    interrupt.status, interrupt.decision = Interrupt.Status.EXPIRED, interrupt.default_action
    interrupt.decided_at, interrupt.tier = now, Interrupt.Tier.ADMIN
    if interrupt.default_action == Interrupt.Decision.REJECT:
        interrupt.comment = "No decision before the deadline; the default (reject) applied."
    interrupt.save(update_fields=["status", "decision", "decided_at", "tier", "comment"])
    metrics.interrupt_decided(interrupt, how="expired")
    run_state = _continue(run, interrupt, by="deadline")
    audit_record(
        actor=None,
        verb="interrupt.expired",
        target=interrupt,
        note=f"deadline {interrupt.deadline_at.isoformat()} passed; "
        f"default {interrupt.default_action} applied",
        before={"status": Interrupt.Status.PENDING},
        after={"status": interrupt.status, "decision": interrupt.decision, "run_state": run_state},
        data={"run": run.pk},
    )
    alert_raise(
        kind="interrupt.expired",
        level=Alert.Level.CRITICAL,
        audience=Alert.Audience.ADMINS,
        title=f"Nobody decided in time: {interrupt.reason}"[:200],
        body=f"Interrupt {interrupt.pk} on run {run.pk} ({_where(interrupt.address)}) passed its "
        f"deadline; its default, {interrupt.default_action}, was applied.",
        target=interrupt,
        data={"run": run.pk},
    )
    push_on_commit(INBOX_GROUP, lambda: _card(interrupt.pk))
    overview_push()
    return interrupt


def interrupts_expire_overdue(now: datetime | None = None) -> int:
    """The beat sweep: expire every pending interrupt past its deadline."""
    now = now or timezone.now()
    due = Interrupt.objects.filter(status=Interrupt.Status.PENDING, deadline_at__lte=now)
    return sum(
        1
        for pk in list(due.values_list("pk", flat=True)[:500])
        if interrupt_expire(interrupt_id=pk, now=now)
    )


@loop_services.retry_deadlocks
@transaction.atomic(durable=True)
def interrupt_withdraw(*, interrupt_id: int) -> Interrupt | None:
    """Its run ended (cancelled, out of time or budget) while the interrupt waited: there is
    nothing left to decide, so it leaves every inbox, and no default or deadline alert
    follows. Lock order: the run, then the interrupt."""
    run_id = Interrupt.objects.values_list("run_id", flat=True).get(pk=interrupt_id)
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not interrupt.is_pending or not run.is_terminal:
        return None  # decided meanwhile, or another sweep got there first
    interrupt.status, interrupt.decided_at = Interrupt.Status.WITHDRAWN, timezone.now()
    interrupt.comment = f"run {run.pk} ended ({run.state}) before a decision"
    interrupt.save(update_fields=["status", "decided_at", "comment"])
    audit_record(
        actor=None,
        verb="interrupt.withdrawn",
        target=interrupt,
        note=interrupt.comment,
        before={"status": Interrupt.Status.PENDING},
        after={"status": interrupt.status, "run_state": run.state},
        data={"run": run.pk},
    )
    push_on_commit(INBOX_GROUP, lambda: _card(interrupt.pk))
    overview_push()
    return interrupt


def interrupts_withdraw_ended() -> int:
    """The beat sweep (with the expiry): withdraw every pending interrupt whose run ended."""
    ended = Interrupt.objects.filter(
        status=Interrupt.Status.PENDING, run__state__in=LoopRun.TERMINAL
    )
    return sum(
        1
        for pk in list(ended.values_list("pk", flat=True)[:500])
        if interrupt_withdraw(interrupt_id=pk) is not None
    )


def _where(address: dict[str, Any]) -> str:
    frames = [address[k]["blueprint"] for k in ("main", "sub", "micro") if k in address]
    return (
        f"{address.get('domain', '?')} / {' / '.join(frames)}, iteration {address.get('iteration')}"
    )


def _card(interrupt_id: int) -> str:
    from oversight import fragments

    return fragments.interrupt_update(interrupt_id)


def _raised(interrupt: Interrupt) -> str:
    from oversight import fragments

    return fragments.interrupt_raised(interrupt)


def _iso(moment) -> str:
    return moment.isoformat() if moment is not None else "an unknown time"
