"""manage.py audit verify | export [--output FILE]: the audit log's hash chain on a terminal
(issue 18, DESIGN.md H5). verify checks the chain from its first row and exits non-zero
naming the first row that does not match; export writes every sealed row as a JSON line, for
an outside auditor to check offline with docs/AUDIT.md's script."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.core.management.base import BaseCommand, CommandError

from oversight.chain import GENESIS, audit_awaiting_seal, audit_export_lines, audit_verify


class Command(BaseCommand):
    help = (
        "verify: check the audit log's hash chain and name the first row that does not match "
        "(exit 1). export: write the sealed rows as JSON lines (docs/AUDIT.md)."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("action", choices=["verify", "export"])
        parser.add_argument(
            "--output", metavar="FILE", help="export: the file to write (standard output if none)"
        )

    def handle(self, *args, action: str, output: str | None, **options) -> None:
        if action == "verify":
            if output:
                raise CommandError("--output is for export; verify writes its finding only.")
            self._verify()
        else:
            self._export(output)

    def _verify(self) -> None:
        report = audit_verify()
        awaiting = f"{report.awaiting_seal} row(s) awaiting their seal."
        if report.mismatch is not None:
            bad = report.mismatch
            raise CommandError(
                f"The audit chain does not hold: row {bad.id} at position {bad.position} fails "
                f"the {bad.check} check: {bad.detail}. Verified up to position "
                f"{report.verified_up_to}. {awaiting}"
            )
        if report.verified_up_to == 0:
            self.stdout.write(f"The audit chain is empty. {awaiting}")
            return
        self.stdout.write(
            f"The audit chain holds: positions 1 to {report.verified_up_to} verified, last hash "
            f"{report.last_hash}. {awaiting}"
        )

    def _export(self, output: str | None) -> None:
        try:
            if output is None:
                count, tail = _export_to(self.stdout.write)
            else:
                with open(output, "w", encoding="utf-8") as file:
                    count, tail = _export_to(lambda line: file.write(line + "\n"))
        except OSError as exc:
            raise CommandError(f"Cannot write the export to {output}: {exc.strerror}.") from exc
        # On stderr, so that standard output stays JSON lines: the anchor to keep.
        self.stderr.write(
            f"Exported {count} sealed row(s); the last hash is {tail}. "
            f"{audit_awaiting_seal()} row(s) await their seal and are not in it."
        )


def _export_to(write: Callable[[str], object]) -> tuple[int, str]:
    """Every sealed row through write(), one JSON line each; how many, and the last hash."""
    count, last = 0, ""
    for line in audit_export_lines():
        write(line)
        count, last = count + 1, line
    return count, json.loads(last)["hash"] if count else GENESIS
