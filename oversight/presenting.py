"""A proposal as a person reads it (issue 17): labelled fields with their units, the limit
it crossed in one sentence, and what each choice does. Pure functions of the interrupt's
own data (its proposal, the phase's output schema kept as proposal_schema, and `limit`),
so the pushed card and the decision page say the same thing without a query.

The schema's `title` and `description` name a field; `unit` is a keyword of ours (JSON
Schema validators ignore keywords they do not know): {"dose_mg": {"type": "number",
"title": "Dose", "unit": "mg"}}. A field without a title gets its key, humanised.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from django.utils import timezone

# Units written against the number, as people write them ("145%", not "145 %").
_TIGHT_UNITS = frozenset({"%", "°", "‰"})


@dataclass(frozen=True)
class Table:
    """A list of objects (a ranking of suppliers, say) as rows under labelled columns."""

    columns: list[str]
    rows: list[list[str]]


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    value: str  # formatted, with its unit
    description: str = ""
    crossed: bool = False  # the field whose value crossed the limit
    table: Table | None = None  # for a list of objects: its rows, and `value` counts them


def _properties(schema: Any) -> dict[str, Any]:
    if not isinstance(schema, dict) or not isinstance(schema.get("properties"), dict):
        return {}
    return {k: v for k, v in schema["properties"].items() if isinstance(v, dict)}


def humanise(key: str) -> str:
    """dose_mg → "Dose mg"; maxDose → "Max dose"."""
    words = "".join(f" {c.lower()}" if c.isupper() else c for c in key)
    text = " ".join(words.replace("_", " ").replace("-", " ").split())
    return text[:1].upper() + text[1:]


def label(key: str, schema: Any) -> str:
    """The field's title in the schema, else its key humanised."""
    title = _properties(schema).get(key, {}).get("title")
    return str(title) if title else humanise(key)


def unit(key: str, schema: Any) -> str:
    return str(_properties(schema).get(key, {}).get("unit") or "")


def number(value: int | float) -> str:
    """Thousands separated, at most four decimals, no trailing zeros: 1450 → "1,450",
    0.75 → "0.75", 1450.0 → "1,450"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    text = f"{value:,.4f}".rstrip("0").rstrip(".") if isinstance(value, float) else f"{value:,}"
    return "0" if text == "-0" else text


def value_text(value: Any, unit: str = "") -> str:
    """A proposal's value as text: a number with its unit, yes/no, a list of scalars joined,
    anything nested as compact JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if not unit:
            return number(value)
        return f"{number(value)}{'' if unit in _TIGHT_UNITS else ' '}{unit}"
    if value is None:
        return "—"
    if isinstance(value, str):
        return f"{value} {unit}".strip() if unit else value
    if isinstance(value, list) and all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
    ):
        return ", ".join(value_text(v, unit) for v in value) or "none"
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def proposal_fields(proposal: Any, schema: Any, limit: Any = None) -> list[Field]:
    """The proposal's fields in the schema's order, then any the schema does not name; a
    proposal that is not an object is one field, "Proposal"."""
    crossed = limit.get("field") if isinstance(limit, dict) else None
    if not isinstance(proposal, dict):
        return [] if proposal is None else [Field("", "Proposal", value_text(proposal))]
    described = _properties(schema)
    keys = [k for k in described if k in proposal] + [k for k in proposal if k not in described]
    fields = []
    for key in keys:
        value, items = proposal[key], table(proposal[key], described.get(key, {}).get("items"))
        fields.append(
            Field(
                key=key,
                label=label(key, schema),
                value=_count(len(value)) if items else value_text(value, unit(key, schema)),
                description=str(described.get(key, {}).get("description") or ""),
                crossed=key == crossed,
                table=items,
            )
        )
    return fields


def table(value: Any, schema: Any = None) -> Table | None:
    """A list of objects as a table: a column per key (the items' schema's order, then the
    keys as they come), each cell as value_text says it; None for anything else."""
    if not value or not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        return None
    described = _properties(schema)
    keys = [k for k in described if any(k in row for row in value)]
    for row in value:
        keys += [k for k in row if k not in keys]
    return Table(
        columns=[label(k, schema) for k in keys],
        rows=[
            [value_text(row[k], unit(k, schema)) if k in row else "—" for k in keys]
            for row in value
        ],
    )


def _count(n: int) -> str:
    return f"{number(n)} {'item' if n == 1 else 'items'}"


def limit_sentence(limit: Any, schema: Any) -> str:
    """What was crossed, in words: "Dose 1,450 mg is over the 1,000 mg maximum for this
    patient" (the limit another field of the proposal, named by its title), or "Dose
    1,600 mg is over the limit of 1,000 mg" (a number). "" without a limit."""
    if not isinstance(limit, dict) or not {"field", "value", "limit"} <= set(limit):
        return ""
    key, limit_field = str(limit["field"]), limit.get("limit_field")
    the_unit = unit(key, schema)
    crossing = f"{label(key, schema)} {value_text(limit['value'], the_unit)} is over the"
    if limit_field:
        bound = value_text(limit["limit"], unit(str(limit_field), schema) or the_unit)
        return f"{crossing} {bound} {_lower(label(str(limit_field), schema))}"
    return f"{crossing} limit of {value_text(limit['limit'], the_unit)}"


def _lower(text: str) -> str:
    """A humanised key or a title put mid-sentence: "Max dose mg" → "max dose mg", but an
    acronym stays ("ICU beds")."""
    return text if text[:2].isupper() else text[:1].lower() + text[1:]


@dataclass(frozen=True)
class Choices:
    approve: str
    reject: str
    modify: str


def choices(
    *,
    proposal: Any,
    schema: Any,
    limit: Any,
    default_action: str,
    on_reject: str = "",
    approvals: int = 1,
) -> Choices:
    """What each button does, in words, from the interrupt's data (loops.engine.decisions
    applies them): approve uses the proposal as it stands, reject feeds the comment back
    and the step runs again (on_reject: the blueprint's own words for what it then does),
    modify uses the edited values instead."""
    if isinstance(limit, dict) and limit.get("kind") == "budget":
        return _budget_choices(proposal, limit, default_action)
    goes_ahead = "The proposal is used as it stands and the run goes on"
    if isinstance(limit, dict) and "field" in limit and "value" in limit:
        key = str(limit["field"])
        amount = value_text(limit["value"], unit(key, schema))
        goes_ahead = f"{label(key, schema)} {amount} goes ahead as proposed, over its limit"
    reject = "Nothing of it is used: the step runs again with your comment as feedback"
    if on_reject:
        reject = f"{reject}; {on_reject}"
    modify = "Your edited values replace the proposal (checked against its schema)"
    if proposal is None:
        modify = "Your values are handed to the run's next step"
    fallback = " It is also what happens if nobody decides in time."
    goes_on = ", and the run goes on with them."
    if approvals > 1:  # issue 18: what one approval does, and a modify, under a quorum
        goes_ahead = f"{goes_ahead}, once {approvals} different people approve"
        reject = f"Any one reject ends it. {reject}"
        goes_on = (
            f"; the count starts again, yours the first of the {approvals} approvals they need."
        )
    return Choices(
        approve=f"{goes_ahead}.{fallback if default_action == 'approve' else ''}",
        reject=f"{reject}.{fallback if default_action == 'reject' else ''}",
        modify=f"{modify}{goes_on}",
    )


# --- Escalation ladders (issue 18) ------------------------------------------------------------

# The default at the deadline, to come and once applied.
_DEFAULT_WORDS = {"approve": ("approves", "approved"), "reject": ("rejects", "rejected")}


def audience_name(to: str) -> str:
    """Who a rung tells, as the card says it: "operators", "admins", "group:on-call" → "the
    on-call group"."""
    if to.startswith("group:"):
        return f"the {to.removeprefix('group:')} group"
    return to


def ladder_sentence(
    ladder: Any,
    *,
    deadline_at: datetime,
    default_action: str,
    status: str = "pending",
    decided_at: datetime | None = None,
    tz: tzinfo | None = None,
) -> str:
    """The ladder's countdown in words: "reminded the on-call group at 10:02; goes to admins
    at 10:05; rejects at 10:10": the rungs taken, at the time they were taken, the rungs to
    come at theirs, then the default at the deadline. Once settled, only what happened (the
    rungs taken and, if it expired, "rejected at 10:10"). Times in tz, to the minute when
    every one is on the minute, else to the second. "" without a ladder.

    `ladder` is Interrupt.ladder: [{"at", "action", "to", "done_at"}], times in ISO 8601.
    """
    if not ladder:
        return ""
    pending = status == "pending"
    to_come, applied = _DEFAULT_WORDS.get(default_action, (default_action, default_action))
    steps: list[tuple[str, datetime]] = []
    for rung in ladder:
        who = audience_name(str(rung.get("to", "")))
        remind = rung.get("action") == "remind"
        if rung.get("done_at"):
            words = f"reminded {who}" if remind else f"went to {who}"
            steps.append((words, _moment(rung["done_at"])))
        elif pending:
            steps.append((f"reminds {who}" if remind else f"goes to {who}", _moment(rung["at"])))
    if pending:
        steps.append((to_come, deadline_at))
    elif status == "expired" and decided_at is not None:
        steps.append((applied, decided_at))
    moments = [moment.astimezone(tz) if tz else moment for _, moment in steps]
    shape = "%H:%M" if all(m.second == m.microsecond == 0 for m in moments) else "%H:%M:%S"
    return "; ".join(
        f"{words} at {moment:{shape}}" for (words, _), moment in zip(steps, moments, strict=True)
    )


def interrupt_ladder(interrupt: Any, tz: tzinfo | None = None) -> str:
    """ladder_sentence of an interrupt, from its own fields (no query)."""
    return ladder_sentence(
        interrupt.ladder,
        deadline_at=interrupt.deadline_at,
        default_action=interrupt.default_action,
        status=interrupt.status,
        decided_at=interrupt.decided_at,
        tz=tz,
    )


def _moment(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _budget_choices(proposal: Any, limit: dict[str, Any], default_action: str) -> Choices:
    """A budget question's choices (loops.engine.budget, issue 18): the extension is set
    aside from what the parent has left, and a reject ends the run as running out does."""
    amount = proposal.get("extend_by") if isinstance(proposal, dict) else None
    left = limit.get("parent_left")
    room = "within what its parent has left" if left is not None else "(no parent bounds it)"
    at_most = f"at most {value_text(left)}" if left is not None else "any amount"
    fallback = " It is also what happens if nobody decides in time."
    return Choices(
        approve=f"The budget grows by {value_text(amount)} {room}, and the run retries what "
        f"it could not afford.{fallback if default_action == 'approve' else ''}",
        reject="The run ends exhausted (budget), as it would have without asking."
        f"{fallback if default_action == 'reject' else ''}",
        modify=f"The budget grows by your amount instead (more than 0, {at_most}), and the "
        "run goes on.",
    )


def approvals_sentence(approvals: list[Any], *, iso: bool = False) -> str:
    """Who approved, in words (issue 18): "alice (operator) at 10:02:03 and bob (admin) at
    10:05:00". iso: the times as ISO 8601 with microseconds, as the API and a 409 write
    them. Each approval has `by`, `role` and `at` (oversight.models.InterruptApproval)."""
    parts = []
    for approval in approvals:
        when = approval.at.isoformat() if iso else f"{timezone.localtime(approval.at):%H:%M:%S}"
        role = f" ({approval.role})" if approval.role else ""
        parts.append(f"{approval.by}{role} at {when}")
    if len(parts) < 2:
        return "".join(parts)
    return f"{', '.join(parts[:-1])} and {parts[-1]}"


def approve_label(*, needed: int, given: int) -> str:
    """The approve button's words under a quorum: whether this approval decides."""
    if needed <= 1:
        return "Approve"
    if given + 1 >= needed:
        return f"Approve: completes the quorum ({needed} of {needed})"
    return f"Approve ({given + 1} of {needed}; it waits for {needed - given - 1} more)"
