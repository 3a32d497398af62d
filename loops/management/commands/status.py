from __future__ import annotations

from django.core.management.base import BaseCommand

from loops import selectors
from loops.models import LoopRun


class Command(BaseCommand):
    help = "Print each domain with its state and run counts, then every live run."

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
