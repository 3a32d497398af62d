from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"

    def ready(self) -> None:
        from django.apps import apps
        from django.db.models.signals import post_migrate

        from console.roles import roles_sync

        # After the last app's migrations, when every permission exists. Django sends
        # post_migrate only for apps with a models module, so the last of those.
        last = [config for config in apps.get_app_configs() if config.models_module][-1]
        post_migrate.connect(roles_sync, sender=last)
