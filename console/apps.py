from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"

    def ready(self) -> None:
        from django.apps import apps
        from django.db.models.signals import post_migrate

        from console.roles import roles_sync

        # After the last app's migrations, when every permission exists.
        post_migrate.connect(roles_sync, sender=list(apps.get_app_configs())[-1])
