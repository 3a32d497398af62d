from __future__ import annotations

from django.apps import AppConfig


class RealmsConfig(AppConfig):
    name = "realms"
    verbose_name = "Realms and federation"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        # After loops' own post_migrate (INSTALLED_APPS order) mirrored the declarations.
        post_migrate.connect(_agents_sync, sender=self)


def _agents_sync(**kwargs) -> None:
    from realms.services.peers import agents_sync

    agents_sync()
