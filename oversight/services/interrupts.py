"""Interrupts: a decision escalated to a human (DESIGN.md H2, CONCEPTS 37, 40).

Raised by an agent (in its result, or through the API), by a policy (validation exhausted,
confidence under a floor, a value over a limit) or by a breaker, always in the transaction
that holds the run. The run waits in `interrupted`. Exactly one decision wins: deciders lock
the run, then the interrupt, and the losers find it decided (409 naming who, in which realm
and when). The decision goes into the run's context; the run's next step applies it
(loops.engine). What happens at the deadline, or when the run ends first, is in
oversight.services.deadlines; copies of a peer realm's interrupts (DESIGN.md H9) are in
oversight.services.copies; approvals by several people, for an interrupt that needs a
quorum (issue 18), are in oversight.services.quorum.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from common.db import retry_deadlocks
from common.metrics import interrupt_decided_on_commit
from common.push import INBOX_GROUP, overview_push, push_on_commit
from common.refusals import Refused
from loops import services as loop_services
from loops.models import Agent, Iteration, LoopRun
from loops.specs import Escalate
from loops.trace import Trace
from oversight import fragments, selectors
from oversight.audit import audit_record
from oversight.models import Alert, CircuitBreaker, Interrupt
from oversight.services import copies, quorum
from oversight.services.alerts import alert_raise, alerts_retire
from oversight.services.interrupt_rules import (
    LEVEL,
    PAST,
    already_decided,
    check_decision,
    interrupt_update_html,
    stack_address,
    where,
)
from oversight.services.ladders import ladder_as_raised
from realms import decisions  # one decision wherever it is taken (DESIGN.md H9)

State = LoopRun.State


def interrupt_raise(
    *,
    run: LoopRun,
    trace: Trace,
    source: str,
    reason: str,
    policy: Escalate,
    proposal: Any = None,
    proposal_schema: dict[str, Any] | None = None,
    limit: dict[str, Any] | None = None,
    severity: str = Interrupt.Severity.WARNING,
    rationale: str = "",
    iteration: Iteration | None = None,
    agent: Agent | None = None,
    breaker: CircuitBreaker | None = None,
) -> Interrupt:
    """Inside the transaction holding the run (locked): move it to interrupted and record
    what the human must decide, by when, and what happens if nobody does. Its event joins
    the transaction's trace."""
    assert transaction.get_connection().in_atomic_block, "interrupt_raise needs a transaction"
    before = run.state
    run.move_to(State.INTERRUPTED)
    run.lease_worker, run.lease_expires_at = "", None
    run.save(update_fields=["state", "context", "updated_at", "lease_worker", "lease_expires_at"])
    # What the pushed card shows besides the row, read first: the run's earlier decisions
    # cannot change while the run is locked, and from the row on operators are waiting.
    address = stack_address(run, iteration)
    run.history = selectors.run_decisions(run.pk)  # type: ignore[attr-defined]
    now = timezone.now()
    ladder, rung_due_at = ladder_as_raised(policy, now)  # its steps as declared now (issue 18)
    interrupt = Interrupt.objects.create(
        run=run,
        iteration=iteration,
        source=source,
        agent=agent,
        breaker=breaker,
        address=address,
        reason=reason,
        rationale=rationale,
        proposal=proposal,
        proposal_schema=proposal_schema,
        limit=limit,
        severity=severity,
        deadline_at=now + timedelta(seconds=policy.deadline_s),
        default_action=policy.default_action,
        ladder=ladder,
        rung_due_at=rung_due_at,
        created_at=now,
        # Fixed now: a later change of the declaration leaves this one as it was (issue 18).
        approvals_needed=quorum.approvals_needed(policy, proposal),
        approvers_from=list(policy.approvers_from),
    )
    # Registered before the audit's sealing and the alert's notifications, so after commit
    # the inbox push leaves before those: operators wait for this one. (The step's own
    # earlier callbacks, its next step's enqueue and coalesced pushes, still precede it.)
    push_on_commit(INBOX_GROUP, lambda: fragments.interrupt_raised(interrupt))
    overview_push()  # pending approvals
    raised = {"interrupt": interrupt.pk, "source": source, "reason": reason}
    trace.add(run.pk, "interrupt.raised", raised)
    audit_record(
        actor=None,
        verb="interrupt.raised",
        target=interrupt,
        note=reason,
        before={"run_state": before},
        after={"status": interrupt.status, "run_state": run.state},
        data={"source": source, "run": run.pk},
    )
    decisions.interrupt_follows(interrupt)  # its copy to the realm that asked, if granted
    alert_raise(
        kind="interrupt.raised",
        level=LEVEL.get(severity, Alert.Level.WARNING),
        title=f"Decision needed: {reason}"[:200],
        body=f"Run {run.pk} ({where(interrupt.address)}) waits for a decision until "
        f"{interrupt.deadline_at:%H:%M:%S %Z}; if nobody decides, it will {policy.default_action}.",
        target=interrupt,
        data={"run": run.pk, "severity": severity},
    )
    return interrupt


@retry_deadlocks
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
        raise Refused(
            403, "forbidden", f"Agent {agent} belongs to another domain than run {run.pk}."
        )
    if run.state not in (State.RUNNING, State.WAITING):
        raise Refused(
            409,
            "wrong_state",
            f"Run {run.pk} is {run.state}; only a running or waiting run can be interrupted.",
        )
    spec = BLUEPRINTS.get(run.blueprint.name)
    trace = Trace(run.root_id)
    interrupt = interrupt_raise(
        run=run,
        trace=trace,
        source=Interrupt.Source.AGENT,
        reason=reason,
        policy=spec.policy.escalation if spec else Escalate(),
        proposal=proposal,
        severity=severity,
        rationale=rationale,
        agent=agent,
    )
    trace.write()
    return interrupt


def interrupt_decide(
    *,
    interrupt_id: int,
    actor,
    decision: str,
    payload: Any = None,
    comment: str = "",
    on_behalf: tuple[str, str] | None = None,
    version: int | None = None,
) -> Interrupt:
    """Approve, reject (with a reason fed back to the loop) or modify (with a payload that
    matches the proposal's schema). An interrupt raised here is decided here, under its
    run's lock; `on_behalf` (person, realm) is a peer realm's operator deciding it there
    (DESIGN.md H9). A copy of a peer's interrupt is decided in the peer, which alone says
    who wins (realms.decisions). `version`: the proposal's version the person read; under a
    quorum a modify makes a new one, and a decision on an older one is refused (409)."""
    remote = Interrupt.objects.values_list("remote", flat=True).get(pk=interrupt_id)
    if remote:
        return copies.decide_copy(
            interrupt_id=interrupt_id,
            actor=actor,
            decision=decision,
            payload=payload,
            comment=comment,
        )
    return _decide_here(
        interrupt_id=interrupt_id,
        actor=actor,
        decision=decision,
        payload=payload,
        comment=comment,
        on_behalf=on_behalf,
        version=version,
    )


@retry_deadlocks
@transaction.atomic(durable=True)
def _decide_here(
    *,
    interrupt_id: int,
    actor,
    decision: str,
    payload: Any,
    comment: str,
    on_behalf: tuple[str, str] | None,
    version: int | None = None,
) -> Interrupt:
    """Lock order: the run, then the interrupt; the losers find it decided (409)."""
    run_id = Interrupt.objects.values_list("run_id", flat=True).get(pk=interrupt_id)
    run = LoopRun.objects.select_for_update(no_key=True).get(pk=run_id)
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not interrupt.is_pending:
        raise Refused(409, "already_decided", already_decided(interrupt))
    if run.is_terminal:  # the withdrawal sweep has not got to it yet
        raise Refused(
            409, "run_ended", f"Run {run.pk} has ended ({run.state}): there is nothing to decide."
        )
    check_decision(interrupt, decision, payload, comment)
    quorum.check_version(interrupt, version)
    if interrupt.needs_quorum and decision != Interrupt.Decision.REJECT:
        # Issue 18: an approval short of the quorum, or a modify (its count starts again),
        # is recorded and the interrupt stays pending; the last approval decides below.
        settles = quorum.approval_record(
            interrupt=interrupt,
            actor=actor,
            decision=decision,
            payload=payload,
            comment=comment,
            on_behalf=on_behalf,
        )
        if not settles:
            push_on_commit(INBOX_GROUP, lambda: interrupt_update_html(interrupt.pk))
            return interrupt
    interrupt.move_to(
        Interrupt.Status.DECIDED,
        at=timezone.now(),
        decision=decision,
        by=actor,
        payload=payload,
        comment=comment,
    )
    person, realm = on_behalf or ("", "")
    interrupt.decided_by_name, interrupt.decided_realm = person[:150], realm[:60]
    interrupt.save(
        update_fields=[
            "status",
            "decision",
            "payload",
            "comment",
            "decided_by",
            "decided_at",
            "decided_by_name",
            "decided_realm",
        ]
    )
    assert interrupt.decided_at is not None
    interrupt_decided_on_commit(
        how="human", raised=interrupt.created_at, decided=interrupt.decided_at
    )
    by = f"{person}@{realm}" if on_behalf else actor.get_username()
    run_state = continue_after(run, interrupt, by=by)
    audit_record(
        actor=actor,
        verb=f"interrupt.{PAST[decision]}",
        target=interrupt,
        note=comment,
        before={"status": Interrupt.Status.PENDING, "proposal": interrupt.proposal},
        after={
            "status": interrupt.status,
            "decision": decision,
            "payload": interrupt.payload,
            "run_state": run_state,
        },
        data={
            "run": run.pk,
            **quorum.audit_data(interrupt),
            **({"realm": realm, "person": person} if on_behalf else {}),
        },
        on_behalf=by if on_behalf else "",
    )
    alerts_retire(
        target=interrupt, why=f"interrupt {interrupt.pk} was decided ({decision}) by {by}"
    )
    decisions.interrupt_settled(interrupt)
    push_on_commit(INBOX_GROUP, lambda: interrupt_update_html(interrupt.pk))
    overview_push()
    return interrupt


def continue_after(run: LoopRun, interrupt: Interrupt, *, by: str) -> str:
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
        run.prior_state = State.RUNNING  # where the lift or the resume will take it
        fields.append("prior_state")
    run.save(update_fields=fields)
    trace = Trace(run.root_id)
    decided = {"interrupt": interrupt.pk, "decision": interrupt.decision, "by": by}
    trace.add(run.pk, "interrupt.decided", decided)
    trace.write()
    return run.state


@transaction.atomic(durable=True)
def interrupt_claim(*, interrupt_id: int, actor) -> Interrupt:
    """ "X is reviewing": a visible claim, not a lock; anyone with the role may still decide."""
    interrupt = Interrupt.objects.select_for_update(of=("self",)).get(pk=interrupt_id)
    if not interrupt.is_pending:
        raise Refused(409, "already_decided", already_decided(interrupt))
    interrupt.claimed_by, interrupt.claimed_at = actor, timezone.now()
    interrupt.save(update_fields=["claimed_by", "claimed_at"])
    audit_record(actor=actor, verb="interrupt.claimed", target=interrupt)
    push_on_commit(INBOX_GROUP, lambda: interrupt_update_html(interrupt.pk))
    return interrupt
