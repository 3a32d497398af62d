from __future__ import annotations

import pytest
from django.db import connection

from console import liveness
from tests.conftest import start_worker, wait_for

pytestmark = pytest.mark.django_db


def test_it_reports_database_redis_and_live_workers(client, celery_worker):
    response = client.get("/api/v1/health")

    assert response.status_code == 200
    assert response.json() == {
        "database": "ok",
        "redis": "ok",
        "workers": 1,
        "halted": False,
        "halts": 0,
    }


def test_it_counts_workers_in_and_out(client, celery_worker):
    second = start_worker(connection.settings_dict["NAME"], name="second")
    try:
        assert client.get("/api/v1/health").json()["workers"] == 2
    finally:
        second.stop()

    # A clean stop withdraws the worker at once; it does not wait for the key to expire.
    assert client.get("/api/v1/health").json()["workers"] == 1


def test_it_drops_a_killed_worker_when_its_beat_expires(client, celery_worker, monkeypatch):
    second = start_worker(connection.settings_dict["NAME"], name="killed")
    key = f"{liveness.KEY_PREFIX}{second.hostname}"
    second.process.kill()  # SIGKILL: no goodbye
    second.process.wait()

    assert 0 < liveness.redis_client().ttl(key) <= liveness.TTL_SECONDS
    liveness.redis_client().expire(key, 1)  # the TTL running out, without the wait
    wait_for(lambda: client.get("/api/v1/health").json()["workers"] == 1)


def test_it_answers_503_naming_redis_when_redis_is_down(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    liveness.redis_client.cache_clear()
    try:
        response = client.get("/api/v1/health")
    finally:
        liveness.redis_client.cache_clear()

    assert response.status_code == 503
    assert response.json() == {
        "database": "ok",
        "redis": "unavailable",
        "workers": 0,
        "halted": False,
        "halts": 0,
    }


def test_it_needs_no_sign_in_and_is_in_the_openapi_document(client):
    document = client.get("/api/v1/openapi.json").json()

    assert client.get("/api/v1/health").status_code == 200
    assert set(document["paths"]["/api/v1/health"]) == {"get"}


def test_it_rejects_other_methods_with_a_json_error(client):
    response = client.post("/api/v1/health")

    assert response.status_code == 405
