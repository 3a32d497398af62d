"""Decisions that need more than one person (issue 18; CONCEPTS 39, 40; DESIGN.md H2, H5).

A policy may ask for N approvals from different people (Escalate(approvals=N)), when its
proposal crosses a limit (quorum_over) or always, and optionally each from a different group
(approvers_from). The number is fixed on the interrupt when it is raised. Under the run's
lock, then the interrupt's (oversight.services.interrupts._decide_here):

- an approve that leaves approvals missing is recorded (one row, audited as
  `interrupt.approved` with "k of n"), the card is pushed, and the interrupt stays pending;
- the approve that completes the quorum decides it, exactly as a single approve does;
- a reject by anyone ends it at once, with that reject;
- a modify replaces the proposal under decision and starts the count again: the modifier's
  approval is the first of the new proposal (they chose those values), so the others
  approve what will actually be used.

The same person approving the same proposal twice gets a 409 naming when they did; a peer
realm's operator deciding through a copy is one person, "name@realm" (DESIGN.md H9).
"""

from __future__ import annotations

from typing import Any

from common.refusals import Refused
from loops.specs import Escalate
from oversight.audit import audit_record
from oversight.models import Interrupt, InterruptApproval
from oversight.presenting import approvals_sentence

MAX_APPROVALS = 20  # what a peer realm's message may ask for (realms.services.remote_interrupts)


def approvals_needed(policy: Escalate, proposal: Any) -> int:
    """How many people must approve this proposal: policy.approvals when quorum_over is
    empty or one of its limits is crossed, else one."""
    if policy.approvals <= 1:
        return 1
    if not policy.quorum_over:
        return policy.approvals
    values = proposal if isinstance(proposal, dict) else {}
    crossed = any(_over(values, key, limit) for key, limit in policy.quorum_over.items())
    return policy.approvals if crossed else 1


def _number(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _over(values: dict[str, Any], key: str, limit: Any) -> bool:
    """values[key] over the limit: a number, another field's name, or (either, factor).
    A missing or non-numeric value or limit crosses nothing (as Escalate.over)."""
    bound, factor = (limit[0], limit[1]) if isinstance(limit, tuple | list) else (limit, 1.0)
    value = _number(values.get(key))
    base = _number(values.get(bound) if isinstance(bound, str) else bound)
    scale = _number(factor)
    if value is None or base is None or scale is None:
        return False
    return value > base * scale


def console_role(user) -> str:
    """The person's console role as the card names it: admin, operator (or their first
    group, else "")."""
    if user.is_superuser:
        return "admin"
    groups = list(user.groups.values_list("name", flat=True))
    return next((r for r in ("admin", "operator", "viewer") if r in groups), "") or (
        groups[0] if groups else ""
    )


def _role_for(interrupt: Interrupt, user, by: str, realm: str, taken: list[str]) -> str:
    """The group this approval counts for. Without approvers_from: the person's role (a peer's
    operator: "realm <slug>"). With it: the first of those groups the person belongs to that
    no approval of this proposal has counted for yet; 403 if they belong to none, 409 if
    their groups have approved already."""
    groups = [str(g) for g in interrupt.approvers_from or []]
    if not groups:
        return f"realm {realm}" if user is None else console_role(user)
    mine = set(user.groups.values_list("name", flat=True)) if user is not None else set()
    if user is not None and user.is_superuser:
        mine.add("admin")
    eligible = [g for g in groups if g in mine]
    if not eligible:
        raise Refused(
            403,
            "not_an_approver",
            f"Interrupt {interrupt.pk} needs its approvals from {', '.join(groups)}, one each; "
            f"{by} belongs to none of them.",
        )
    free = [g for g in eligible if g not in taken]
    if not free:
        missing = [g for g in groups if g not in taken]
        raise Refused(
            409,
            "group_already_approved",
            f"Interrupt {interrupt.pk} already has the approval of {', '.join(eligible)}; "
            f"the approvals missing must come from {', '.join(missing)}.",
        )
    return free[0]


def check_version(interrupt: Interrupt, version: int | None) -> None:
    """A decision on the proposal as the person read it: after a modify under a quorum, one
    taken on the older values is refused (409), so nobody approves values they did not see.
    None: the caller did not say (an older client, a peer realm)."""
    if version is None or version == interrupt.proposal_version:
        return
    modified = next((a for a in interrupt.current_approvals if a.modified), None)
    who = f" by {modified.by} at {modified.at.isoformat()}" if modified else ""
    raise Refused(
        409,
        "proposal_changed",
        f"The proposal of interrupt {interrupt.pk} was modified{who} since you read it "
        f"(your version {version}, now {interrupt.proposal_version}); read it again, then decide.",
    )


def approval_record(
    *,
    interrupt: Interrupt,
    actor,
    decision: str,
    payload: Any,
    comment: str,
    on_behalf: tuple[str, str] | None,
) -> bool:
    """Inside the decision's transaction, with the run and the interrupt locked, for an
    approve or a modify of an interrupt that needs a quorum: record the approval and audit
    it. True when it completes the quorum (the caller then decides the interrupt, as a
    single approve would); False when the interrupt stays pending."""
    person, realm = on_behalf or ("", "")
    by = f"{person}@{realm}" if on_behalf else actor.get_username()
    user = None if on_behalf else actor
    current = interrupt.current_approvals
    before: dict[str, Any] = {"status": interrupt.status, "approvals": len(current)}
    before["proposal"] = None  # a modify's audit row keeps the proposal it replaced
    if decision == Interrupt.Decision.MODIFY:
        before["proposal"] = interrupt.proposal
        role = _role_for(interrupt, user, by, realm, taken=[])
        interrupt.proposal, interrupt.proposal_version = payload, interrupt.proposal_version + 1
        interrupt.save(update_fields=["proposal", "proposal_version"])
        current = []
    else:
        mine = next((a for a in current if a.by == by), None)
        if mine is not None:
            raise Refused(
                409,
                "already_approved",
                f"{by} already approved this proposal of interrupt {interrupt.pk} at "
                f"{mine.at.isoformat()}; {_more(interrupt.approvals_needed - len(current))} "
                "by someone else.",
            )
        role = _role_for(interrupt, user, by, realm, taken=[a.role for a in current])
    approval = InterruptApproval.objects.create(
        interrupt=interrupt,
        user=user,
        by=by[:220],
        role=role[:150],
        version=interrupt.proposal_version,
        modified=decision == Interrupt.Decision.MODIFY,
    )
    given, needed = len(current) + 1, interrupt.approvals_needed
    if given >= needed:
        return True
    audit_record(
        actor=actor,
        verb=f"interrupt.{'modified' if approval.modified else 'approved'}",
        target=interrupt,
        note=comment,
        before=before,
        after={
            "status": interrupt.status,
            "approvals": given,
            "needed": needed,
            "proposal": interrupt.proposal if approval.modified else None,
        },
        data={
            "run": interrupt.run_id,
            "approval": f"{given} of {needed}",
            "version": interrupt.proposal_version,
            "role": role,
            **({"realm": realm, "person": person} if on_behalf else {}),
        },
        on_behalf=by if on_behalf else "",
    )
    return False


def _more(missing: int) -> str:
    return f"{missing} more approval{'s are' if missing != 1 else ' is'} needed"


def audit_data(interrupt: Interrupt) -> dict[str, Any]:
    """What the deciding audit row adds for a quorum: who approved, as the API lists them."""
    if not interrupt.needs_quorum:
        return {}
    return {"approvals": approvals_list(interrupt), "needed": interrupt.approvals_needed}


def approvals_list(interrupt: Interrupt) -> list[dict[str, Any]]:
    """The approvals of the proposal as it stands, as the API and a peer realm see them."""
    return [
        {"by": a.by, "role": a.role, "at": a.at.isoformat()} for a in interrupt.current_approvals
    ]


def approvers_named(interrupt: Interrupt) -> str:
    """For a 409 after a quorum decided it: " Approved by alice (operator) at … and …"."""
    if not interrupt.needs_quorum or interrupt.decision != Interrupt.Decision.APPROVE:
        return ""
    approvals = interrupt.current_approvals
    return f" Approved by {approvals_sentence(approvals, iso=True)}." if approvals else ""
