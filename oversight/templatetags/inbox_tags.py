"""Filters of the approval inbox's templates."""

from __future__ import annotations

import json
from typing import Any

from django import template
from django.utils import timezone

from oversight import presenting

register = template.Library()


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON for a <pre> or a <textarea> (autoescaped by the template)."""
    return json.dumps(value, indent=2, sort_keys=True)


@register.filter
def proposal_fields(interrupt: Any) -> list[presenting.Field]:
    """The interrupt's proposal as labelled fields with units (oversight.presenting)."""
    return presenting.proposal_fields(
        interrupt.proposal, interrupt.proposal_schema, interrupt.limit
    )


@register.filter
def limit_sentence(interrupt: Any) -> str:
    """The limit the proposal crossed, in words ("" when none was recorded)."""
    return presenting.limit_sentence(interrupt.limit, interrupt.proposal_schema)


@register.filter
def ladder_sentence(interrupt: Any) -> str:
    """The escalation ladder's countdown in words, in the current time zone (issue 18)."""
    return presenting.interrupt_ladder(interrupt, tz=timezone.get_current_timezone())


@register.simple_tag
def decision_choices(interrupt: Any, on_reject: str = "") -> presenting.Choices:
    """What approve, reject and modify each do for this interrupt, in words."""
    return presenting.choices(
        proposal=interrupt.proposal,
        schema=interrupt.proposal_schema,
        limit=interrupt.limit,
        default_action=interrupt.default_action,
        on_reject=on_reject,
        approvals=interrupt.approvals_needed,
    )


@register.simple_tag
def approve_label(interrupt: Any) -> str:
    """The approve button's words: under a quorum, whether this approval decides (issue 18)."""
    if not interrupt.needs_quorum or not interrupt.is_pending:
        return "Approve"
    return presenting.approve_label(
        needed=interrupt.approvals_needed, given=len(interrupt.current_approvals)
    )


@register.filter
def approvals_sentence(approvals: Any) -> str:
    """Who approved, in words: "alice (operator) at 10:02:03 and bob (admin) at 10:05:00"."""
    return presenting.approvals_sentence(list(approvals))


@register.filter
def compact_json(value: Any) -> str:
    """JSON for a data- attribute (autoescaped by the template), read by decide.js."""
    return json.dumps(value, separators=(",", ":"))
