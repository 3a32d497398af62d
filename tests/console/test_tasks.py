from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.utils import timezone

from console.tasks import sessions_clear
from tests.conftest import wait_for


def _session(*, expired: bool) -> str:
    store = SessionStore()
    store["user"] = "someone"
    store.create()
    if expired:
        Session.objects.filter(pk=store.session_key).update(
            expire_date=timezone.now() - timedelta(days=1)
        )
    return store.session_key


@pytest.mark.django_db(transaction=True)  # the worker process must see committed rows
def test_it_runs_on_a_real_worker_and_its_effect_is_in_the_database(celery_worker):
    expired, current = _session(expired=True), _session(expired=False)

    sessions_clear.delay()

    wait_for(lambda: not Session.objects.filter(pk=expired).exists())
    assert Session.objects.filter(pk=current).exists()
