"""A run's subtree (the run, its children, theirs …), by one recursive query: the one place
that walks the stack downwards (cancels, run-scoped halts and their lifts, the breakers' and
halts' reads)."""

from __future__ import annotations

from django.db import connection

# A CTE named `subtree` of the run %(run)s and its descendants, for statements to build on.
SUBTREE = """
subtree AS (
    SELECT id FROM loops_looprun WHERE id = %(run)s
    UNION ALL
    SELECT c.id FROM loops_looprun c JOIN subtree s ON c.parent_id = s.id
)
"""


def subtree_ids(run_id: int | None) -> list[int]:
    """The run and every run below it, parents before their children."""
    with connection.cursor() as cursor:
        cursor.execute(f"WITH RECURSIVE {SUBTREE} SELECT id FROM subtree", {"run": run_id})  # noqa: S608
        return [row[0] for row in cursor.fetchall()]
