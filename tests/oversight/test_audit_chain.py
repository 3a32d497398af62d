"""The audit log that proves itself (issue 18; DESIGN.md H5; CONCEPTS 39 and 52): rows written
concurrently are sealed into one gapless hash chain; a row changed or deleted directly in the
database, by a superuser who disables the append-only trigger first, is found and named by
`manage.py audit verify`, the API and the audit page; an export checks out offline with the
script of docs/AUDIT.md, and a tampered export does not."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, connections, transaction

from common.redis import redis_client
from console.auth import token_create
from console.celery import app
from oversight.audit import audit_record
from oversight.chain import (
    CONTENT,
    GENESIS,
    SEAL_QUEUED,
    audit_seal,
    audit_verify,
    chain_record,
    record_hash,
)
from oversight.models import AuditEvent
from tests.conftest import bearer, person, signed_in, wait_for

ROOT = Path(__file__).resolve().parents[2]
APPEND_ONLY = "oversight_audit_append_only"


def _write(target, count: int, note: str = "", data: dict | None = None) -> list[AuditEvent]:
    """count audit rows, each in its own transaction, as the services write them."""
    written = []
    for i in range(count):
        with transaction.atomic():
            written.append(
                audit_record(
                    actor=None,
                    verb="test.written",
                    target=target,
                    note=f"{note}{i}",
                    data=data or {},
                )
            )
    return written


def _sealed(count: int) -> list[AuditEvent]:
    """count rows of varied content (none, non-ASCII, nested JSON with floats), sealed."""
    target = person("target")
    rows = _write(
        target, count, note="Dosis über dem Maximum, Zürich ", data={"mg": 2.5, "l": [1, None]}
    )
    audit_seal()
    return [AuditEvent.objects.get(pk=row.pk) for row in rows]


def _behind_the_trigger(sql: str, params: list) -> None:
    """As a superuser can: the append-only trigger off, one statement, the trigger on again.
    (The test's transaction first checks its deferred foreign keys: PostgreSQL alters no
    table with trigger events pending.)"""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE oversight_auditevent DISABLE TRIGGER {APPEND_ONLY}")
        cursor.execute(sql, params)
        cursor.execute(f"ALTER TABLE oversight_auditevent ENABLE TRIGGER {APPEND_ONLY}")
        cursor.execute("SET CONSTRAINTS ALL DEFERRED")


def _verify_fails() -> str:
    with pytest.raises(CommandError) as failed:
        call_command("audit", "verify")
    return str(failed.value)


# --- Sealing ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_seals_rows_written_concurrently_into_one_gapless_chain(roles):
    """Writers never wait for the chain; sealers running alongside them, one at a time,
    still give every committed row exactly one place."""
    target = person("target")
    writers, each = 4, 12
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write_and_seal(number: int) -> None:
        try:
            start.wait()
            for i in range(each):
                _write(target, 1, note=f"writer {number} row {i}")
                if i % 3 == number % 3:
                    audit_seal()
        except BaseException as exc:  # reported below: a thread's failure is not the test's
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write_and_seal, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    audit_seal()

    chain = list(
        AuditEvent.objects.order_by("chain_position").values_list(
            "chain_position", "chain_prev", "chain_hash"
        )
    )
    assert [position for position, _, _ in chain] == list(range(1, writers * each + 1))
    assert [prev for _, prev, _ in chain] == [GENESIS] + [digest for _, _, digest in chain[:-1]]
    report = audit_verify()
    assert (report.ok, report.verified_up_to, report.awaiting_seal) == (True, writers * each, 0)
    assert report.last_hash == chain[-1][2]


def _is_sealed(row: AuditEvent) -> bool:
    return AuditEvent.objects.filter(pk=row.pk, chain_position__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_a_worker_seals_a_row_after_its_commit_and_the_sweep_what_a_lost_task_left(
    roles, celery_worker
):
    # A flag an earlier test left, its task still queued, would do as well; this test's own.
    redis_client().delete(SEAL_QUEUED)
    target = person("target")
    (first,) = _write(target, 1)
    wait_for(lambda: _is_sealed(first))

    # A sealing task lost on its way: the flag says one is queued, so the commit sends none.
    redis_client().set(SEAL_QUEUED, 1)
    (second,) = _write(target, 1)
    entry = settings.CELERY_BEAT_SCHEDULE["audit-seal"]
    assert entry["schedule"] <= 10
    app.send_task(entry["task"])  # as beat sends it
    wait_for(lambda: _is_sealed(second))
    report = audit_verify()
    assert (report.ok, report.verified_up_to) == (True, 2)


@pytest.mark.django_db
def test_the_trigger_lets_only_the_sealers_one_update_through(roles):
    (sealed,) = _sealed(1)
    (fresh,) = _write(person("other"), 1)
    statements = [
        ("UPDATE oversight_auditevent SET chain_hash = %s WHERE id = %s", ["0" * 64, sealed.pk]),
        (
            "UPDATE oversight_auditevent SET chain_position = NULL, chain_prev = NULL, "
            "chain_hash = NULL WHERE id = %s",
            [sealed.pk],
        ),
        (
            "UPDATE oversight_auditevent SET chain_position = 2, chain_prev = %s, chain_hash = %s, "
            "note = 'rewritten' WHERE id = %s",
            [sealed.chain_hash, "1" * 64, fresh.pk],
        ),
    ]
    for sql, params in statements:
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(sql, params)

    forged = {"chain_position": 9, "chain_prev": GENESIS, "chain_hash": "2" * 64}
    with pytest.raises(DatabaseError, match="inserted unsealed"), transaction.atomic():
        AuditEvent.objects.create(
            actor_name="forger", verb="x.y", target_type="run", target_id="1", **forged
        )
    assert audit_seal() == 1  # the one update that is let through: fresh gets its place
    assert AuditEvent.objects.get(pk=fresh.pk).chain_position == 2
    assert audit_verify().ok


# --- Verifying: a tampered row is named ------------------------------------------------------


@pytest.mark.django_db
def test_verify_passes_on_an_untouched_chain(roles):
    rows = _sealed(5)
    out = io.StringIO()

    call_command("audit", "verify", stdout=out)

    assert f"positions 1 to 5 verified, last hash {rows[-1].chain_hash}" in out.getvalue()
    assert "0 row(s) awaiting their seal" in out.getvalue()


@pytest.mark.django_db
def test_a_row_changed_behind_the_trigger_is_named_by_verify_the_api_and_the_page(roles):
    rows = _sealed(5)
    _behind_the_trigger(
        "UPDATE oversight_auditevent SET note = 'nothing happened' WHERE id = %s", [rows[2].pk]
    )

    message = _verify_fails()
    assert f"row {rows[2].pk} at position 3 fails the hash check" in message
    assert "Verified up to position 2" in message

    admin = person("ada", "admin")
    answer = bearer(token_create(user=admin)).get("/api/v1/audit/verify")
    assert answer.status_code == 200
    assert answer.json() == {
        "ok": False,
        "verified_up_to": 2,
        "last_hash": rows[1].chain_hash,
        "awaiting_seal": 0,
        "mismatch": {
            "id": rows[2].pk,
            "position": 3,
            "check": "hash",
            "detail": "its content does not match its hash: changed after it was sealed",
        },
    }
    page = signed_in(admin).get("/oversight/audit/", {"verify": "1"}).content.decode()
    assert f"First mismatch at row 3 (audit event {rows[2].pk}" in page


@pytest.mark.django_db
def test_a_row_rehashed_behind_the_trigger_breaks_the_next_link(roles):
    """Whoever changes a row and writes its new hash too leaves the next row pointing at the
    old one: only rewriting the whole tail hides a change, and an anchor catches that."""
    rows = _sealed(5)
    content = AuditEvent.objects.values(*CONTENT).get(pk=rows[2].pk) | {"note": "x"}
    rehashed = record_hash(chain_record(content, position=3, prev=rows[1].chain_hash))
    _behind_the_trigger(
        "UPDATE oversight_auditevent SET note = 'x', chain_hash = %s WHERE id = %s",
        [rehashed, rows[2].pk],
    )

    message = _verify_fails()
    assert f"row {rows[3].pk} at position 4 fails the prev check" in message


@pytest.mark.django_db
def test_a_deleted_row_is_detected_and_the_gap_named(roles):
    rows = _sealed(5)
    _behind_the_trigger("DELETE FROM oversight_auditevent WHERE id = %s", [rows[2].pk])

    message = _verify_fails()
    assert f"row {rows[3].pk} at position 4 fails the position check" in message
    assert "the row at 3 is missing" in message


@pytest.mark.django_db
def test_a_row_unsealed_to_be_sealed_again_leaves_its_gap(roles):
    rows = _sealed(4)
    _behind_the_trigger(
        "UPDATE oversight_auditevent SET note = 'x', chain_position = NULL, chain_prev = NULL, "
        "chain_hash = NULL WHERE id = %s",
        [rows[1].pk],
    )
    assert audit_seal() == 1  # the sealer takes it for a new row: position 5

    message = _verify_fails()
    assert f"row {rows[2].pk} at position 3 fails the position check" in message


# --- Who may verify, and what the page says ----------------------------------------------------


@pytest.mark.django_db
def test_only_admins_verify_the_whole_chain(roles):
    _sealed(3)
    operator, viewer = person("otto", "operator"), person("vera", "viewer")

    assert bearer(token_create(user=operator)).get("/api/v1/audit/verify").status_code == 403
    page = signed_in(viewer).get("/oversight/audit/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "3 rows sealed in the hash chain" in html and "Verify the chain" not in html
    assert signed_in(viewer).get("/oversight/audit/", {"verify": "1"}).status_code == 403


@pytest.mark.django_db
def test_the_page_counts_rows_awaiting_their_seal_and_an_admin_verifies(roles):
    _sealed(3)
    _write(person("late"), 1)
    admin = signed_in(person("ada", "admin"))

    html = admin.get("/oversight/audit/").content.decode()
    assert "1 row awaiting its seal" in html and "Verify the chain" in html
    html = admin.get("/oversight/audit/", {"verify": "1"}).content.decode()
    assert "Chain verified up to row 3" in html


# --- Export, and the offline check of docs/AUDIT.md -----------------------------------------


def _offline_script(tmp_path: Path) -> Path:
    doc = (ROOT / "docs" / "AUDIT.md").read_text(encoding="utf-8")
    script = tmp_path / "verify_audit.py"
    block = re.search(r"```python\n(.*?)```", doc, re.DOTALL)
    assert block, "docs/AUDIT.md holds no Python script"
    script.write_text(block.group(1), encoding="utf-8")
    return script


def _offline(script: Path, export: Path, *anchor: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-I", str(script), str(export), *anchor],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.django_db
def test_an_export_checks_out_offline_and_a_tampered_one_does_not(roles, tmp_path):
    rows = _sealed(5)
    export = tmp_path / "audit.jsonl"
    call_command("audit", "export", output=str(export), stderr=io.StringIO())
    script = _offline_script(tmp_path)

    lines = export.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == [row.pk for row in rows]
    assert json.loads(lines[0])["note"] == "Dosis über dem Maximum, Zürich 0"
    checked = _offline(script, export, f"3:{rows[2].chain_hash}")
    assert checked.returncode == 0, checked.stderr
    assert f"OK: 5 rows, positions 1 to 5, last hash {rows[-1].chain_hash}" in checked.stdout

    record = json.loads(lines[1])
    record["note"] = "nothing happened"
    export.write_text("\n".join([lines[0], json.dumps(record), *lines[2:]]), encoding="utf-8")
    tampered = _offline(script, export)
    assert tampered.returncode == 1
    assert f"line 2: row {rows[1].pk} at position 2: its content does not match" in tampered.stderr

    export.write_text("\n".join([lines[0], *lines[2:]]), encoding="utf-8")
    assert "line 2: " in (gap := _offline(script, export)).stderr and gap.returncode == 1
    assert "expected position 2: a row is missing" in gap.stderr


@pytest.mark.django_db
def test_an_anchor_catches_a_rewritten_history(roles, tmp_path):
    rows = _sealed(3)
    export = tmp_path / "audit.jsonl"
    call_command("audit", "export", output=str(export), stderr=io.StringIO())
    script = _offline_script(tmp_path)

    rewritten = _offline(script, export, f"2:{'a' * 64}")
    assert rewritten.returncode == 1 and "the history was rewritten" in rewritten.stderr
    cut = _offline(script, export, f"4:{rows[-1].chain_hash}")
    assert cut.returncode == 1 and "rows were removed" in cut.stderr


@pytest.mark.django_db
def test_export_refuses_a_file_it_cannot_write_and_verify_takes_no_output(roles, tmp_path):
    with pytest.raises(CommandError, match="Cannot write the export"):
        call_command("audit", "export", output=str(tmp_path / "missing" / "audit.jsonl"))
    with pytest.raises(CommandError, match="--output is for export"):
        call_command("audit", "verify", output=str(tmp_path / "x"))
