from __future__ import annotations

from django.core.management.base import BaseCommand
from django.utils import timezone

from loops import selectors
from loops.models import LoopRun

# A command is a leaf that nothing imports, so reading oversight's rows here keeps the import
# direction of STYLE.md B.2 (loops.models and loops.services never import them).
from oversight.models import CircuitBreaker, Halt, Interrupt
from oversight.presenting import interrupt_ladder


class Command(BaseCommand):
    help = (
        "Print each domain with its state and run counts, every live run, then the active "
        "halts, the pending interrupts and the breakers that are not closed."
    )

    def handle(self, *args, **options) -> None:
        for domain in selectors.domain_list_with_counts():
            counts = ", ".join(f"{state} {n}" for state, n in domain.counts.items() if n)
            self.stdout.write(
                f"{domain.slug:<16} {domain.state:<10} {domain.runs_live} live"
                + (f" ({counts})" if counts else "")
            )
        runs = selectors.run_list(states=LoopRun.LIVE).order_by("root_id", "depth", "id")
        self.stdout.write("")
        self.stdout.write(f"{'run':>8}  {'blueprint':<24} {'depth':>5}  {'state':<12} iteration")
        for run in runs:
            self.stdout.write(
                f"{run.pk:>8}  {run.blueprint.name:<24} {run.depth:>5}  {run.state:<12} "
                f"{run.iteration}"
            )
        if not runs:
            self.stdout.write("No run is live.")
        self._halts()
        self._interrupts()
        self._breakers()

    def _halts(self) -> None:
        halts = Halt.objects.filter(lifted_at__isnull=True).select_related(
            "created_by", "lift_requested_by"
        )
        self.stdout.write("")
        self.stdout.write(
            f"{'halt':>8}  {'scope':<24} {'since':<32}  {'by':<16} {'lift asked by':<16} reason"
        )
        for halt in halts:
            self.stdout.write(
                f"{halt.pk:>8}  {halt.scope:<24} {_iso(halt.created_at):<32}  "
                f"{_name(halt.created_by):<16} {_name(halt.lift_requested_by):<16} {halt.reason}"
            )
        if not halts:
            self.stdout.write("No halt is active.")

    def _interrupts(self) -> None:
        interrupts = Interrupt.objects.filter(status=Interrupt.Status.PENDING)
        self.stdout.write("")
        self.stdout.write(
            f"{'interrupt':>9}  {'run':>8}  {'severity':<8}  {'deadline':<32}  reason"
        )
        for interrupt in interrupts:  # soonest deadline first (Interrupt.Meta)
            self.stdout.write(
                f"{interrupt.pk:>9}  {interrupt.run_id:>8}  {interrupt.severity:<8}  "
                f"{_iso(interrupt.deadline_at):<32}  {interrupt.reason}"
            )
            if ladder := interrupt_ladder(interrupt, tz=timezone.get_current_timezone()):
                self.stdout.write(f"{'':>9}  escalation: {ladder}")
        if not interrupts:
            self.stdout.write("No interrupt is pending.")

    def _breakers(self) -> None:
        breakers = (
            CircuitBreaker.objects.exclude(state=CircuitBreaker.State.CLOSED)
            .select_related("agent__domain", "blueprint", "domain")
            .order_by("name")
        )
        self.stdout.write("")
        self.stdout.write(f"{'breaker':<24} {'guards':<32} {'state':<16} last reason")
        for breaker in breakers:
            state = breaker.state + (" (forced)" if breaker.forced else "")
            self.stdout.write(
                f"{breaker.name:<24} {breaker.guards:<32} {state:<16} {breaker.last_reason}"
            )
        if not breakers:
            self.stdout.write("Every breaker is closed.")


def _iso(value) -> str:
    return value.isoformat(timespec="microseconds")


def _name(user) -> str:
    return user.get_username() if user is not None else "-"
