"""The signed-in people of the loops pages' tests (test_stack_views, test_domain_page); a
test module that defines its own viewer or operator uses that one instead."""

from __future__ import annotations

import pytest

from tests.conftest import with_role


@pytest.fixture
def viewer(client, django_user_model):
    """A viewer, signed in on the test's client."""
    user = with_role(django_user_model.objects.create_user("vera", password="x"), "viewer")
    client.force_login(user)
    return user


@pytest.fixture
def operator(client, django_user_model):
    """An operator, signed in on the test's client."""
    user = with_role(django_user_model.objects.create_user("otto", password="x"), "operator")
    client.force_login(user)
    return user
