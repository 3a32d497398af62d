from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from demo.services import demo_declared, demo_seed


class Command(BaseCommand):
    help = (
        "Create the demo domains (healthcare, education, industrial) with their agents, "
        "blueprints and breakers, and start one main run in each. The beat keeps them going "
        "while DEMO_ENABLED is on."
    )

    def handle(self, *args, **options) -> None:
        if not demo_declared():
            raise CommandError(
                "The demo is not declared: set DEMO_ENABLED=true (or add demo.declarations "
                "to LOOP_DECLARATIONS)."
            )
        for domain, run in demo_seed().items():
            if run is None:
                self.stdout.write(f"{domain}: halted, no run started")
            else:
                self.stdout.write(f"{domain}: started run {run.pk} ({run.blueprint.name})")
