from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create the first admin account if no superuser exists, and print its generated "
        "password once. Only the password's hash is stored."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args, username: str, **options) -> None:
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            self.stdout.write("An admin account exists; no new one was created.")
            return
        password = secrets.token_urlsafe(12)
        user_model.objects.create_superuser(username=username, email="", password=password)
        rule = "=" * 64
        self.stdout.write(
            f"{rule}\n"
            f"  First admin account created. This password is shown only once:\n\n"
            f"      username: {username}\n"
            f"      password: {password}\n\n"
            f"  Change it after signing in. A lost password can be reset with:\n"
            f"      python manage.py changepassword {username}\n"
            f"{rule}"
        )
