"""The realm harness itself (tests/realms/conftest.py): a realm it starts is a real console,
on its own database and Redis database, and it can go away and come back on the same port."""

from __future__ import annotations

import socket

import pytest
import redis

from console import liveness


def _refuses(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        try:
            probe.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


def test_a_realm_runs_as_its_own_console(realms) -> None:
    b = realms("b", 1)

    status, health = b.api("GET", "/api/v1/health")
    assert status == 200
    assert health["database"] == health["redis"] == "ok"

    # Its own database, migrated; the test process's holds none of its rows.
    migrations = b.manage("showmigrations", "loops")
    assert "[X] 0001_initial" in migrations
    assert "[ ]" not in migrations
    assert b.sql("select current_database()") == [("test_realm_b",)]
    assert len(b.sql("select count(*) from loops_domain")) == 1

    # Its worker announces itself in its own Redis database, not in the test process's.
    realm_redis = redis.Redis.from_url(b.redis_url)
    assert b.worker is not None
    assert realm_redis.exists(f"{liveness.KEY_PREFIX}{b.worker.hostname}")
    assert not liveness.redis_client().exists(f"{liveness.KEY_PREFIX}{b.worker.hostname}")

    # Gone: the port refuses connections, and so does the API.
    b.stop_web()
    assert _refuses(b.port)
    with pytest.raises(OSError):
        b.api("GET", "/api/v1/health")

    # Back on the same port and URL, with the same database.
    b.start_web()
    assert b.url == f"http://127.0.0.1:{b.port}"
    status, health = b.api("GET", "/api/v1/health")
    assert status == 200
    assert health["workers"] >= 1
