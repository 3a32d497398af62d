"""/oversight/inbox/: pending interrupts, and the approve / reject / modify commands.

The card (oversight/_interrupt_card.html) is the shared, pushed fragment: the same for
every viewer. The decision form is a per-user partial (_inbox_controls.html) beside the
card inside #interrupt-<pk>, so a push never replaces or leaks it (STYLE.md B.7).
"""

from __future__ import annotations

import json

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import trigger_client_event

from common.http import HtmxHttpRequest
from common.refusals import Refused
from loops.models import Domain
from oversight import fragments, selectors
from oversight.models import Interrupt
from oversight.services import interrupts

VIEW, DECIDE = "oversight.view_interrupt", "oversight.decide_interrupt"
REFUSED = "console/rejected.html"


def _may_act_on(request: HttpRequest, pk: int, perm: str) -> bool:
    """False when the user lacks perm (the caller answers 403); a 404 for no such interrupt.
    Only its existence is read: the service reads and locks what it decides on, and a person
    waits for this answer (keys → decided, docs/BENCHMARKS.md)."""
    if not request.user.has_perm(perm):
        return False
    get_object_or_404(Interrupt.objects.only("pk"), pk=pk)
    return True


def _forbidden(request: HttpRequest) -> HttpResponse:
    return render(request, "console/no_role.html", status=403)


@require_GET
@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    """All pending decisions, or one domain's (?domain=<slug>, linked from the overview's
    domain cards). An unknown slug is a 404 naming it: an empty list would read as "nothing
    waits" for a domain that does not exist, a mistyped or stale link."""
    if not request.user.has_perm(VIEW):
        return _forbidden(request)
    slug = request.GET.get("domain", "")
    domain = None
    if slug:
        domain = Domain.objects.filter(slug=slug).first()
        if domain is None:
            detail = f"There is no domain {slug!r}: its pending decisions cannot be listed."
            return _refused(request, detail, status=404)
    pending = selectors.inbox_pending()
    if domain is not None:
        pending = [i for i in pending if i.run.domain_id == domain.pk]
    return render(request, "oversight/inbox.html", {"interrupts": pending, "domain": domain})


def _parse(post) -> tuple[str, object, str, str]:
    """(decision, payload, comment, error) from the form; error is '' when it parses."""
    decision, comment = post.get("decision", ""), post.get("comment", "")
    if decision not in Interrupt.Decision.values:
        return decision, None, comment, "Choose approve, reject or modify."
    if decision != Interrupt.Decision.MODIFY:
        return decision, None, comment, ""
    try:
        return decision, json.loads(post.get("payload", "")), comment, ""
    except json.JSONDecodeError as exc:
        return decision, None, comment, f"The payload is not valid JSON: {exc}."


@require_POST
@login_required
def interrupt_decide(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    if not _may_act_on(request, pk, DECIDE):
        return _forbidden(request)
    decision, payload, comment, error = _parse(request.POST)
    if error and not request.htmx:
        return _refused(request, error, status=400)
    if not error:
        try:
            interrupts.interrupt_decide(
                interrupt_id=pk,
                actor=request.user,
                decision=decision,
                payload=payload,
                comment=comment,
                version=_version(request.POST),
            )
        except Refused as exc:
            return _rejected(request, pk, exc)
    return _answer(request, pk, error=error)


def _version(post) -> int | None:
    """The proposal's version the form was rendered with (issue 18); None if absent or not
    a number: the service then decides on the proposal as it stands."""
    value = post.get("version", "")
    return int(value) if value.isdigit() and 0 < int(value) < 2**31 else None


@require_POST
@login_required
def interrupt_claim(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    if not _may_act_on(request, pk, DECIDE):
        return _forbidden(request)
    try:
        interrupts.interrupt_claim(interrupt_id=pk, actor=request.user)
    except Refused as exc:
        return _rejected(request, pk, exc)
    return _answer(request, pk)


def _answer(
    request: HtmxHttpRequest, pk: int, *, error: str = "", notice: str = ""
) -> HttpResponse:
    """htmx: the controls again while pending (with the error), else the decided card moved
    to #inbox-decided and the pending item removed; others: back to the inbox."""
    if not request.htmx:
        return redirect("oversight:inbox")
    interrupt = Interrupt.objects.only("pk", "status").get(pk=pk)
    template = fragments.INBOX_OUTCOME  # its id is all it needs
    if interrupt.is_pending:  # the controls again: the whole card's data
        interrupt, template = selectors.interrupt_get_with_history(pk), fragments.INBOX_CONTROLS
    ctx = {"interrupt": interrupt, "error": error, "notice": notice}
    if error and interrupt.is_pending:  # give back what was typed
        ctx |= {"payload": request.POST.get("payload"), "comment": request.POST.get("comment")}
    return render(request, template, ctx)


def _refused(request: HttpRequest, detail: str, *, status: int) -> HttpResponse:
    """A form posted without htmx: the refusal's status and sentence on a page of their own."""
    back = reverse("oversight:inbox")
    return render(request, REFUSED, {"detail": detail, "back": back}, status=status)


def _rejected(request: HtmxHttpRequest, pk: int, exc: Refused) -> HttpResponse:
    """200 with the current truth and a notice: htmx 2 does not swap 4xx (STYLE.md B.5)."""
    if not request.htmx:
        return _refused(request, exc.detail, status=exc.status)
    response = _answer(request, pk, error=exc.detail, notice=exc.detail)
    return trigger_client_event(response, "console:notice", {"text": exc.detail, "code": exc.code})


urlpatterns = [
    path("inbox/", inbox, name="inbox"),
    path("inbox/<int:pk>/decide", interrupt_decide, name="interrupt-decide"),
    path("inbox/<int:pk>/claim", interrupt_claim, name="interrupt-claim"),
]
