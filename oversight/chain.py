"""The audit log's hash chain (issue 18; DESIGN.md H5; CONCEPTS 39 and 52): an audit row that
is changed or removed behind the append-only trigger's back is found, and named.

Rows are inserted as before, in their writers' transactions, with no place in the chain:
a global lock held until each audit-writing transaction commits would queue every interrupt
and every halt behind each other. Instead a sealer, one at a time (a transaction-scoped
advisory lock), takes the committed rows still unsealed and gives each, in a short
transaction of its own, the next position and

    hash = sha256(canonical(record)), record = the row's content + position + prev,

prev being the hash of the row before it (GENESIS for the first). The sealer runs on commit
of every transaction that wrote a row (seal_soon, one queued task for a burst of rows) and
every few seconds as a sweep (console.settings CELERY_BEAT_SCHEDULE), so that a lost message
leaves no row unsealed for long. docs/AUDIT.md documents the canonical form and how an
outside auditor checks an export offline; audit_record() is the only writer of rows, this
module the only writer of their seals.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from celery import current_app
from django.db import connection, transaction

from common.redis import redis_client
from oversight.models import AuditEvent

GENESIS = "0" * 64  # the "previous hash" of the row at position 1
# What a record holds of its row, besides position and prev: every column but the seal's.
CONTENT = (
    "id",
    "at",
    "actor_id",
    "actor_name",
    "verb",
    "target_type",
    "target_id",
    "note",
    "before",
    "after",
    "data",
)
SEAL_COLUMNS = ("chain_position", "chain_prev", "chain_hash")
# pg_advisory_xact_lock's key: one sealer at a time, in the whole database.
SEAL_LOCK = 0x0A0D17C4A1
SEAL_BATCH = 500  # rows per sealing transaction: each holds the lock for milliseconds
# Set while a sealing task is queued and has not started: a burst of rows sends one task.
SEAL_QUEUED = "audit-seal-queued"
SEAL_QUEUED_SECONDS = 60  # should that task be lost, the next row asks again after this


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes that are hashed: JSON with sorted keys, no spaces, UTF-8 (docs/AUDIT.md)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def chain_record(row: dict[str, Any], *, position: int, prev: str) -> dict[str, Any]:
    """A row as it is hashed and exported: its content, its position and the previous hash;
    its time in UTC with microseconds, as the API writes times."""
    record = {name: row[name] for name in CONTENT}
    record["at"] = row["at"].astimezone(UTC).isoformat(timespec="microseconds")
    record["position"] = position
    record["prev"] = prev
    return record


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


# --- Sealing ------------------------------------------------------------------------------


def seal_soon() -> None:
    """After a commit that wrote audit rows: ask for a sealer, unless one is asked for and
    has not started yet (it will see these rows: audit_seal clears the flag before it
    reads). Sent by name: no tasks module is imported below the tasks."""
    if redis_client().set(SEAL_QUEUED, 1, nx=True, ex=SEAL_QUEUED_SECONDS):
        current_app.send_task("oversight.tasks.audit_seal")


def audit_seal(*, batch: int = SEAL_BATCH) -> int:
    """Seal every committed unsealed row; returns how many were sealed.

    1. Clear the queued flag first, so that a row committed from now on asks for another
       sealer instead of counting on this one, which may have read past it.
    2. Seal a batch at a time, each in its own short transaction, until none is left.
    """
    redis_client().delete(SEAL_QUEUED)
    sealed = 0
    while True:
        count = _seal_batch(batch)
        sealed += count
        if count < batch:
            return sealed


_SEAL = """
UPDATE oversight_auditevent AS audit
SET chain_position = seal.pos, chain_prev = seal.prev_hash, chain_hash = seal.digest
FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[]) AS seal(id, pos, prev_hash, digest)
WHERE audit.id = seal.id AND audit.chain_hash IS NULL
"""


@transaction.atomic(durable=True)
def _seal_batch(batch: int) -> int:
    """Under the lock: the chain's tail, then up to `batch` unsealed rows in id order, each
    given the next position and its hash, in one UPDATE (the trigger's one allowed kind).

    The tail and the rows are read after the lock is taken: under READ COMMITTED each
    statement sees what committed before it, the previous sealer's seals included."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEAL_LOCK])
        position, prev = _tail()
        rows = AuditEvent.objects.filter(chain_hash=None).order_by("id").values(*CONTENT)
        seals: list[tuple[int, int, str, str]] = []
        for row in rows[:batch]:
            position += 1
            digest = record_hash(chain_record(row, position=position, prev=prev))
            seals.append((row["id"], position, prev, digest))
            prev = digest
        if seals:
            cursor.execute(_SEAL, [list(column) for column in zip(*seals, strict=True)])
            # Only sealers update rows, one at a time: a row sealed twice is a bug, not a race.
            assert cursor.rowcount == len(seals), "an audit row was sealed by someone else"
    return len(seals)


# --- Verifying ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """The first row that does not match: which check failed, in words."""

    id: int
    position: int
    check: str  # "position": a row before it is missing; "prev": the link; "hash": content
    detail: str


@dataclass(frozen=True)
class ChainReport:
    verified_up_to: int  # the last position whose row, and every row before it, matched
    last_hash: str  # that row's hash (GENESIS when none): an auditor's anchor
    awaiting_seal: int  # rows committed and not sealed yet (not a failure: the sealer's queue)
    mismatch: Mismatch | None

    @property
    def ok(self) -> bool:
        return self.mismatch is None


def audit_verify() -> ChainReport:
    """Recompute the chain from the first row: each position follows the last without a gap,
    each row names the previous row's hash, and its hash matches its content. Reads every
    sealed row (a server-side cursor: one snapshot, a chunk at a time)."""
    expected, prev = 1, GENESIS
    rows = AuditEvent.objects.exclude(chain_hash=None).order_by("chain_position")
    for row in rows.values(*CONTENT, *SEAL_COLUMNS).iterator(chunk_size=2000):
        if mismatch := _mismatch(row, expected, prev):
            return ChainReport(expected - 1, prev, audit_awaiting_seal(), mismatch)
        expected, prev = expected + 1, row["chain_hash"]
    return ChainReport(expected - 1, prev, audit_awaiting_seal(), None)


def _mismatch(row: dict[str, Any], expected: int, prev: str) -> Mismatch | None:
    position = row["chain_position"]
    if position != expected:
        missing = str(expected) if position == expected + 1 else f"{expected} to {position - 1}"
        detail = f"it is at position {position}; the row at {missing} is missing"
        return Mismatch(row["id"], position, "position", detail)
    if row["chain_prev"] != prev:
        detail = "its link does not name the hash of the row before it"
        return Mismatch(row["id"], position, "prev", detail)
    if record_hash(chain_record(row, position=position, prev=prev)) != row["chain_hash"]:
        detail = "its content does not match its hash: changed after it was sealed"
        return Mismatch(row["id"], position, "hash", detail)
    return None


def audit_awaiting_seal() -> int:
    return AuditEvent.objects.filter(chain_hash=None).count()


def audit_sealed_count() -> int:
    """The chain's length as its tail says (one index read); audit_verify proves it."""
    return _tail()[0]


def _tail() -> tuple[int, str]:
    """The last sealed row's position and hash; (0, GENESIS) for an empty chain."""
    rows = AuditEvent.objects.exclude(chain_hash=None).order_by("-chain_position")
    tail = rows.values_list("chain_position", "chain_hash").first()
    return (tail[0] or 0, tail[1] or GENESIS) if tail else (0, GENESIS)


# --- Exporting ----------------------------------------------------------------------------


def audit_export_lines() -> Iterator[str]:
    """Every sealed row in chain order as one JSON line: its record (what is hashed) and its
    hash. docs/AUDIT.md's script checks a file of these with the standard library alone."""
    rows = AuditEvent.objects.exclude(chain_hash=None).order_by("chain_position")
    for row in rows.values(*CONTENT, *SEAL_COLUMNS).iterator(chunk_size=2000):
        record = chain_record(row, position=row["chain_position"], prev=row["chain_prev"])
        record["hash"] = row["chain_hash"]
        yield canonical(record).decode("utf-8")
