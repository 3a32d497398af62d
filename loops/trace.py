"""The trace of a loop stack (CONCEPTS 52): `Event` rows with seqs gapless and increasing per
root, taken from the root's `EventCounter` inside the transaction that writes them, so a
rollback gives its numbers back and two writers of one trace take turns.

A transaction collects its events in a `Trace` and writes them once, at its end, in one
statement. Lock order: the counter is always locked last (after runs, interrupts, breakers).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from common.db import prepared_cursor

Event = tuple[int, str, dict[str, Any]]  # (run id, type, payload)

# Take n seqs from the root's counter and insert the events with them, as two CTEs that a
# transaction's write statement begins with (engine.writes), so that the trace costs no
# statement of its own; or alone (events_write). The timestamp is read by the database once
# the counter is locked, not by Python before: two writers racing for the counter would
# otherwise stamp seqs out of order. The events come as one JSON array [run, type, payload].
TRACE_CTES = """
trace_counter AS (
    UPDATE loops_eventcounter SET last_seq = last_seq + jsonb_array_length(%(trace)s::jsonb)
    WHERE root_id = %(trace_root)s RETURNING last_seq
),
trace_events AS (
    INSERT INTO loops_event (root_id, run_id, seq, type, payload, ts)
    SELECT %(trace_root)s, (e.event->>0)::bigint,
           trace_counter.last_seq - jsonb_array_length(%(trace)s::jsonb) + e.ord,
           e.event->>1, e.event->2, clock_timestamp()
    FROM trace_counter, jsonb_array_elements(%(trace)s::jsonb) WITH ORDINALITY AS e(event, ord)
    RETURNING 1
)"""
_TRACE_INSERT = f"WITH {TRACE_CTES} SELECT count(*) FROM trace_events"  # noqa: S608 (constants)

# The same for the events of many traces at once (a halt parks a thousand runs): each root's
# counter moves once, in root order, so two such writers cannot deadlock on counters.
_TRACES_INSERT = """
WITH batch AS (
    SELECT e.root_id, e.run_id, e.type, e.payload,
           row_number() OVER (PARTITION BY e.root_id ORDER BY e.ord) AS ord,
           count(*) OVER (PARTITION BY e.root_id) AS n
    FROM unnest(%(roots)s::bigint[], %(runs)s::bigint[], %(types)s::text[], %(payloads)s::jsonb[])
         WITH ORDINALITY AS e(root_id, run_id, type, payload, ord)
),
counter AS (
    UPDATE loops_eventcounter c SET last_seq = c.last_seq + t.n
    FROM (SELECT root_id, max(n) AS n FROM batch GROUP BY root_id ORDER BY root_id) t
    WHERE c.root_id = t.root_id
    RETURNING c.root_id, c.last_seq, t.n
)
INSERT INTO loops_event (root_id, run_id, seq, type, payload, ts)
SELECT b.root_id, b.run_id, counter.last_seq - counter.n + b.ord, b.type, b.payload,
       clock_timestamp()
FROM batch b JOIN counter ON counter.root_id = b.root_id
"""

_encode = DjangoJSONEncoder().encode


def trace_params(root_id: int | None, events: list[Event]) -> dict[str, Any]:
    """The parameters of TRACE_CTES."""
    if root_id is None:  # every run has its root from the transaction that creates it
        raise ValueError("a trace needs the root run's id")
    return {"trace_root": root_id, "trace": _encode(events)}


def events_write(root_id: int | None, events: Iterable[Event]) -> None:
    """Append (run_id, type, payload) events to a root's trace, inside the caller's
    transaction: in autocommit the counter would commit alone, and a crash before the insert
    would leave a gap."""
    assert transaction.get_connection().in_atomic_block, "events_write needs a transaction"
    events = list(events)
    if not events:
        return
    with prepared_cursor() as cursor:
        cursor.execute(_TRACE_INSERT, trace_params(root_id, events))
        (written,) = cursor.fetchone()
    if written != len(events):
        raise RuntimeError(f"run {root_id} has no event counter; is it a root?")


def events_write_many(events: list[tuple[int | None, int, str, dict[str, Any]]]) -> None:
    """Append (root_id, run_id, type, payload) events to several traces in one statement."""
    assert transaction.get_connection().in_atomic_block, "events_write_many needs a transaction"
    if not events:
        return
    with prepared_cursor() as cursor:
        cursor.execute(
            _TRACES_INSERT,
            {
                "roots": [root for root, _, _, _ in events],
                "runs": [run for _, run, _, _ in events],
                "types": [kind for _, _, kind, _ in events],
                "payloads": [_encode(payload) for _, _, _, payload in events],
            },
        )


class Trace:
    """The events one transaction adds to one root's trace: collected while it works (by
    whichever service takes part in it), written once at its end."""

    def __init__(self, root_id: int | None) -> None:
        self.root_id = root_id
        self.events: list[Event] = []

    def add(self, run_id: int, kind: str, payload: dict[str, Any]) -> None:
        self.events.append((run_id, kind, payload))

    def write(self) -> None:
        events, self.events = self.events, []
        events_write(self.root_id, events)

    def take_params(self) -> dict[str, Any]:
        """The events so far, as the parameters of TRACE_CTES; they count as written."""
        events, self.events = self.events, []
        return trace_params(self.root_id, events)
