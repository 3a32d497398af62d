from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_it_creates_the_first_admin_and_prints_a_password_that_signs_in(client, django_user_model):
    out = StringIO()

    call_command("ensure_admin", stdout=out)

    password = re.search(r"password: (\S+)", out.getvalue()).group(1)
    admin = django_user_model.objects.get(username="admin")
    assert admin.is_superuser
    assert password not in admin.password  # only the hash is stored
    # Through the login form, as a person signs in (and past the login throttle, django-axes).
    signed_in = client.post("/accounts/login/", {"username": "admin", "password": password})
    assert signed_in.status_code == 302
    assert client.get("/").status_code == 200


def test_it_creates_no_second_admin(django_user_model):
    django_user_model.objects.create_superuser("root", password="a long passphrase")
    out = StringIO()

    call_command("ensure_admin", stdout=out)

    assert "password:" not in out.getvalue()
    assert django_user_model.objects.filter(is_superuser=True).count() == 1
