"""The federated demo's second realm (`./bin/console --federated`, README: The demo): the
regional pharmacy, run by the launcher beside the first realm on the same PostgreSQL (a
database of its own) and Redis (a database number of its own), with a data folder of its own
for its key; and the pairing of the two, done as both realms' admins would do it.

Only the launcher uses this; like it, it imports no Django at module level (the realms'
processes are started with the environment made here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from common.env import BASE_DIR
from console.supervisor import ChildFailed

PYTHON = sys.executable

# The federated demo's second realm (README: The demo): its slug, name, the module declaring
# its loops, and the blueprint it lets the first realm call.
PHARMACY_SLUG = "regional-pharmacy"
PHARMACY_NAME = "Regional Pharmacy"
PHARMACY_DECLARATIONS = "demo.pharmacy_declarations"
PHARMACY_BLUEPRINT = "second-opinion"
# What the first realm's settings must not hand the second: its own are set instead.
_NOT_INHERITED = (
    "REALM_",
    "DEMO_ENABLED",
    "DEMO_PHARMACY_REALM",
    "LOOP_DECLARATIONS",
    "DJANGO_SECRET_KEY",
    "CELERY_BROKER_URL",
    "CHANNELS_PREFIX",
    "PROMETHEUS_MULTIPROC_DIR",
)


def pharmacy_env(env: dict[str, str], data_dir: Path, host: str, port: int) -> dict[str, str]:
    """The regional pharmacy realm's environment, from the first realm's: a database beside
    its database, the next Redis database number, a data folder (its key, secret key, static
    files, beat schedule, metrics) under data_dir/peer/, its own slug, name, URL and loops."""
    folder = data_dir / "peer" / PHARMACY_SLUG
    database = urlsplit(env["DATABASE_URL"])
    redis_url = urlsplit(env["REDIS_URL"])
    redis_db = int(redis_url.path.strip("/") or 0) + 1
    peer = {k: v for k, v in env.items() if not k.startswith(_NOT_INHERITED)}
    peer.update(
        CONSOLE_DATA_DIR=str(folder),
        PORT=str(port),
        DATABASE_URL=database._replace(
            path=f"{database.path}_{PHARMACY_SLUG.replace('-', '_')}"
        ).geturl(),
        REDIS_URL=redis_url._replace(path=f"/{redis_db}").geturl(),
        REALM_SLUG=PHARMACY_SLUG,
        REALM_NAME=PHARMACY_NAME,
        REALM_URL=f"http://{host}:{port}",
        LOOP_DECLARATIONS=PHARMACY_DECLARATIONS,
        # Its demo starts nothing by itself: the first realm's stacks call it.
        DEMO_ENABLED="false",
        CHANNELS_PREFIX=PHARMACY_SLUG,
    )
    return peer


def create_database(url: str) -> None:
    """The second realm's database on the first one's server, made if missing."""
    name = urlsplit(url).path.lstrip("/")
    admin = urlsplit(url)._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        query = "SELECT 1 FROM pg_database WHERE datname = %s"
        if not conn.execute(query, [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def federate(env: dict[str, str], peer: dict[str, str], url: str) -> None:
    """Both admins' halves of the pairing at once (demo_federate: audited, idempotent): the
    console asks and may call the pharmacy's blueprint; the pharmacy approves and grants."""
    manage = [PYTHON, str(BASE_DIR / "manage.py"), "demo_federate", "--blueprints"]
    halves = {
        "the console's": (
            [*manage, PHARMACY_BLUEPRINT, "--ask", "--peer-url", peer["REALM_URL"]],
            env,
        ),
        "the pharmacy's": ([*manage, PHARMACY_BLUEPRINT, "--answer", "--peer-url", url], peer),
    }
    started = {
        what: subprocess.Popen(
            argv,
            env=side,
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for what, (argv, side) in halves.items()
    }
    try:
        for what, process in started.items():
            output = process.communicate()[0]
            if process.returncode != 0:
                raise ChildFailed(f"{what} half of the pairing failed:\n{output}")
            print(f"    {output.strip()}", flush=True)
    finally:  # a Ctrl-C meanwhile, or the other half failed: neither outlives the launcher
        for process in started.values():
            if process.poll() is None:
                process.kill()
                process.wait()
