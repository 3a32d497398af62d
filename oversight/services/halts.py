"""The emergency halt (DESIGN.md H1, CONCEPTS 42): the database row is the source of truth.

halt_engage parks every run in scope as `halted`, keeping its prior state, in the
transaction that creates the halt. From that commit no step and no agent call starts in
scope: every engine transaction locks its run and finds it halted (or, for a run that raced
the halt, finds the halt in oversight.gates). Queued steps do nothing; results of calls
already in flight are stored held. Celery revoke is not used: nothing depends on it.
"""

from __future__ import annotations

import re

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from common.db import retry_deadlocks
from common.push import (
    CONSOLE_GROUP,
    domain_group,
    overview_push,
    push_on_commit,
    push_soon_on_commit,
)
from common.refusals import Refused
from loops import services as loop_services
from loops.models import Contribution, Domain, LoopRun
from loops.subtree import SUBTREE
from loops.trace import events_write_many
from oversight import fragments, selectors
from oversight.audit import audit_record
from oversight.halt_scope import PARKABLE, halt_scope_ids
from oversight.models import Alert, Halt
from oversight.services.alerts import alert_raise
from realms import frames  # a halt follows the work into peer realms (DESIGN.md H8)

State = LoopRun.State
# ASCII digits only: str.isdigit() takes "²", which int() refuses.
_SCOPE = re.compile(r"global|domain:(?P<domain>[-A-Za-z0-9_]+)|run:(?P<run>[0-9]{1,18})", re.ASCII)


def halt_scope_parse(scope: str) -> tuple[str, Domain | None, LoopRun | None]:
    """ "global", "domain:<slug>" or "run:<id>" (blanks around it allowed) → (kind, domain,
    run); 400 for anything else, 404 for a domain or run that does not exist."""
    match = _SCOPE.fullmatch(scope.strip())
    if match is None:
        raise Refused(
            400,
            "invalid_scope",
            f"{scope!r} is not a halt scope; use global, domain:<slug> or run:<id>.",
        )
    if match["domain"]:
        domain = Domain.objects.filter(slug=match["domain"]).first()
        if domain is None:
            raise Refused(404, "unknown_domain", f"There is no domain {match['domain']!r}.")
        return Halt.Kind.DOMAIN, domain, None
    if match["run"]:
        run = LoopRun.objects.filter(pk=int(match["run"])).first()
        if run is None:
            raise Refused(404, "unknown_run", f"There is no run {match['run']}.")
        return Halt.Kind.RUN, None, run
    return Halt.Kind.GLOBAL, None, None


def _require_reason(reason: str, what: str) -> None:
    """H1: a halt and its lift say why, and blanks say nothing."""
    if not reason.strip():
        raise Refused(400, "reason_required", f"{what} needs a reason.")


def may_engage(actor, scope: str) -> bool:
    """Whether this person may halt this scope (DESIGN.md H6): an operator a domain or a run,
    only an admin everything."""
    kind = scope.strip().partition(":")[0]
    perm = "oversight.engage_global_halt" if kind == Halt.Kind.GLOBAL else "oversight.engage_halt"
    return actor is not None and actor.has_perm(perm)


@retry_deadlocks
@transaction.atomic(durable=True)
def halt_engage(*, actor, scope: str, reason: str) -> tuple[Halt, bool]:
    """Halt a scope; returns (halt, created). A second press finds the active halt. A
    global halt needs an admin (403); the engine, a test or a command may halt a domain or
    a run as the system (actor None).

    1. Lock the scope's domain rows, so no run of it starts meanwhile (loops.services.run_start).
    2. Park the runs in scope, pass after pass until a pass finds none: a pass locks the runs
       it parks, so a child spawned by a step that committed just before is seen by the next
       pass, and none can be spawned after it.
    3. created_at is taken after the last pass: every step in scope that wrote anything
       committed before it, and none can start after the commit.
    """
    kind, domain, run = halt_scope_parse(scope)
    _require_reason(reason, "A halt")
    if kind == Halt.Kind.GLOBAL and not may_engage(actor, scope):
        raise Refused(403, "forbidden", "Halting everything needs the admin role.")
    name = domain.slug if domain else run.pk if run else ""
    canonical = kind if kind == Halt.Kind.GLOBAL else f"{kind}:{name}"
    _lock_domains(domain if kind == Halt.Kind.DOMAIN else None, every=kind == Halt.Kind.GLOBAL)
    active = Halt.objects.filter(scope=canonical, lifted_at__isnull=True)
    if existing := active.first():
        return existing, False
    try:
        with transaction.atomic():  # a savepoint: two presses of a run halt can race here
            halt = Halt.objects.create(
                scope=canonical, kind=kind, domain=domain, run=run, reason=reason, created_by=actor
            )
    except IntegrityError:  # the other press committed first: it is the halt
        return active.get(), False
    parked: list[tuple[int, int | None, str]] = []
    while batch := _park_pass(halt):
        parked += batch
    halt.created_at, halt.parked = timezone.now(), len(parked)
    halt.save(update_fields=["created_at", "parked"])
    frames.halt_follows(
        halt, [pk for pk, _, _ in parked], lifted=False, by=_name(actor), reason=reason
    )
    events_write_many(
        [
            (root, pk, "run.halted", {"halt": halt.pk, "prior_state": prior})
            for pk, root, prior in parked
        ]
    )
    audit_record(
        actor=actor,
        verb="halt.engaged",
        target=halt,
        note=reason,
        after={"scope": canonical, "active": True},
        data={"parked": len(parked)},
    )
    alert_raise(
        kind="halt.engaged",
        level=Alert.Level.CRITICAL,
        title=f"Emergency halt of {canonical}",
        body=f"{_name(actor)} halted {canonical}: {reason}. {len(parked)} runs parked.",
        target=halt,
        data={"scope": canonical, "parked": len(parked)},
    )
    push_on_commit(CONSOLE_GROUP, _halt_banner)
    _push_views(halt)
    return halt, True


def _lock_domains(domain: Domain | None, *, every: bool) -> None:
    if every:
        list(Domain.objects.select_for_update(no_key=True).order_by("pk").values_list("pk"))
    elif domain is not None:
        list(Domain.objects.select_for_update(no_key=True).filter(pk=domain.pk).values_list("pk"))


# Runs in scope, locked in id order (so two halts cannot deadlock on them), then parked in
# one UPDATE that keeps each prior state. For a run scope, the run and its subtree.
_PARK = f"""
WITH RECURSIVE {SUBTREE},
target AS (
    SELECT r.id FROM loops_looprun r
    WHERE r.state = ANY(%(parkable)s)
      AND (%(kind)s = 'global'
           OR (%(kind)s = 'domain' AND r.domain_id = %(domain)s)
           OR (%(kind)s = 'run' AND r.id IN (SELECT id FROM subtree)))
    ORDER BY r.id
    FOR NO KEY UPDATE
)
UPDATE loops_looprun r
SET prior_state = r.state, state = 'halted', updated_at = %(now)s
FROM target WHERE r.id = target.id AND r.state = ANY(%(parkable)s)
RETURNING r.id, r.root_id, r.prior_state
"""  # noqa: S608  (the subtree CTE of loops.subtree; every value is a parameter)


def _park_pass(halt: Halt) -> list[tuple[int, int | None, str]]:
    with connection.cursor() as cursor:
        cursor.execute(
            _PARK,
            {
                "kind": halt.kind,
                "domain": halt.domain_id,
                "run": halt.run_id,
                "parkable": PARKABLE,
                "now": timezone.now(),
            },
        )
        return list(cursor.fetchall())


@retry_deadlocks
@transaction.atomic(durable=True)
def halt_lift(*, halt_id: int, actor, reason: str) -> Halt:
    """Lift a halt: every run it parked that no other active halt covers goes back to its
    prior state, and the running ones step again. A global halt needs two admins: the
    first asks, a different one confirms (DESIGN.md H1)."""
    _require_reason(reason, "Lifting a halt")
    halt = Halt.objects.select_for_update(of=("self",)).get(pk=halt_id)
    if not halt.is_active:
        by = _name(halt.confirmed_by or halt.lifted_by)
        raise Refused(
            409,
            "already_lifted",
            f"Halt {halt.pk} was already lifted by {by} at {_iso(halt.lifted_at)}.",
        )
    now = timezone.now()
    if halt.kind == Halt.Kind.GLOBAL and halt.lift_requested_by_id is None:
        halt.lift_requested_by, halt.lift_requested_at, halt.lift_reason = actor, now, reason
        halt.save(update_fields=["lift_requested_by", "lift_requested_at", "lift_reason"])
        audit_record(actor=actor, verb="halt.lift_requested", target=halt, note=reason)
        alert_raise(
            kind="halt.lift_requested",
            level=Alert.Level.WARNING,
            audience=Alert.Audience.ADMINS,
            title="Lifting the global halt needs a second admin",
            body=f"{_name(actor)} asked to lift the global halt: {reason}",
            target=halt,
        )
        return halt
    if halt.kind == Halt.Kind.GLOBAL:
        if halt.lift_requested_by_id == actor.pk:
            raise Refused(
                409,
                "needs_second_admin",
                f"{_name(actor)} asked to lift this global halt at "
                f"{_iso(halt.lift_requested_at)}; a different admin must confirm it.",
            )
        halt.lifted_by, halt.confirmed_by = halt.lift_requested_by, actor
        halt.lift_reason = f"{halt.lift_reason} / confirmed: {reason}"
    else:
        halt.lifted_by, halt.lift_reason = actor, reason
    halt.lifted_at = now
    halt.save(update_fields=["lifted_by", "confirmed_by", "lifted_at", "lift_reason"])
    restored = _restore(halt)
    frames.halt_follows(
        halt, [run.pk for run in restored], lifted=True, by=_name(actor), reason=reason
    )
    audit_record(
        actor=actor,
        verb="halt.lifted",
        target=halt,
        note=reason,
        before={"active": True},
        after={"active": False},
        data={"restored": len(restored)},
    )
    alert_raise(
        kind="halt.lifted",
        level=Alert.Level.INFO,
        title=f"Halt of {halt.scope} lifted",
        body=f"{_name(actor)} lifted the halt of {halt.scope}: {reason}. "
        f"{len(restored)} runs resumed.",
        target=halt,
    )
    push_on_commit(CONSOLE_GROUP, _halt_banner)
    _push_views(halt)
    return halt


def _restore(halt: Halt) -> list[LoopRun]:
    """Back to the prior state, except runs another active halt still covers."""
    others = Halt.objects.filter(lifted_at__isnull=True).exclude(pk=halt.pk)
    if others.filter(kind=Halt.Kind.GLOBAL).exists():
        return []
    still = set()
    for other in others:
        still |= halt_scope_ids(other)
    covered = LoopRun.objects.filter(pk__in=halt_scope_ids(halt), state=State.HALTED)
    runs = list(covered.exclude(pk__in=still).select_for_update(no_key=True).order_by("pk"))
    events = []
    for run in runs:
        prior = run.prior_state
        run.move_to(
            State.PAUSED if prior == State.PAUSED else loop_services.resume_target(run, prior)
        )
        run.prior_state = ""  # a paused run keeps its pause, not the halt's memory of it
        run.save(update_fields=["state", "prior_state", "paused_by", "started_at", "updated_at"])
        events.append((run.root_id, run.pk, "run.lifted", {"halt": halt.pk, "state": run.state}))
        if run.state == State.RUNNING:
            loop_services.enqueue(run.pk, urgent=True)
    events_write_many(events)
    return runs


def halt_in_flight(halt: Halt) -> list[dict]:
    """Agent calls in scope that started before the halt and have not answered: their
    results will be held (what operators watch after pressing halt)."""
    calls = Contribution.objects.filter(
        status__in=[Contribution.Status.RUNNING, Contribution.Status.PENDING],
        iteration__run_id__in=halt_scope_ids(halt),
    ).select_related("agent", "iteration")
    return [
        {
            "run": c.iteration.run_id,
            "agent": c.agent.name,
            "status": c.status,
            "started_at": c.started_at,
        }
        for c in calls[:500]
    ]


def _halt_banner() -> str:
    return fragments.halt_banner(selectors.active_halts())


def _push_views(halt: Halt) -> None:
    """At once, not coalesced: the overview, and the live stack of every domain the halt
    covers (all of them for a global one), whose frames turn halted or come back. A worker
    renders them (a stack of a thousand frames takes a while), so the halt answers at once;
    the banner, small, is pushed from here."""
    overview_push(at_once=True)
    domains = Domain.objects.all()
    if halt.kind != Halt.Kind.GLOBAL:
        domains = domains.filter(pk=halt.domain_id or (halt.run.domain_id if halt.run else 0))
    for domain_id in domains.values_list("pk", flat=True):
        push_soon_on_commit(
            domain_group(domain_id), "loops.services.stack.domain_stack_html", domain_id
        )


def _name(user) -> str:
    return user.get_username() if user is not None else "system"


def _iso(moment) -> str:
    return moment.isoformat() if moment is not None else "an unknown time"
