from __future__ import annotations

from django.apps import AppConfig


class OversightConfig(AppConfig):
    """Human control over the loops: interrupts, circuit breakers, emergency halts, alerts,
    notifications, roles and the append-only audit log (DESIGN.md section 4)."""

    name = "oversight"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        post_migrate.connect(_sync, sender=self)


def _sync(**kwargs) -> None:
    # After loops' own sync (loops comes first in INSTALLED_APPS): breakers name its rows.
    from oversight.services.breakers import breakers_sync

    breakers_sync()
