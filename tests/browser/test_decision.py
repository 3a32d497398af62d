"""A modify through the form generated from the proposal's schema (issue 17), in a real
browser under the strict CSP: a negative dose is refused inline and nothing is sent; a
valid one shows the diff of what changed, and only the confirm click sends it."""

from __future__ import annotations

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from playwright.sync_api import ConsoleMessage, Page, Request, expect

from loops import services
from loops.declare import sync_declarations
from oversight.models import Interrupt
from tests.conftest import wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""


class TestDecision(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, page: Page, celery_worker) -> None:
        self.page = page
        self.console: list[str] = []
        self.posts: list[str] = []
        page.add_init_script(COLLECT_VIOLATIONS)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.console.append(f"pageerror {error}"))
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.console.append(message.text)

    def _request(self, request: Request) -> None:
        if request.method == "POST" and "/decide" in request.url:
            self.posts.append(request.post_data or "")

    def test_a_modify_is_checked_inline_then_sent_after_its_diff_is_confirmed(self):
        sync_declarations()
        with_role(get_user_model().objects.create_user("otto", password=PASSWORD), "operator")
        # ward-dose-case proposes 1,450 mg against the patient's own maximum of 1,000 mg.
        run = services.run_start(domain="ward", blueprint="ward-dose-case", input={})
        interrupt = wait_for(
            lambda: Interrupt.objects.filter(run__root_id=run.root_id).first(), timeout=30
        )
        page = self.page
        page.goto(f"{self.live_server_url}/oversight/interrupts/{interrupt.pk}/")
        page.get_by_label("Username").fill("otto")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        # The socket reconnects by itself if its first try fails (a loaded CI machine).
        expect(page.locator("#ws-status")).to_have_text("connected", timeout=20_000)
        item = page.locator(f"#interrupt-{interrupt.pk}")
        expect(item.locator(".interrupt-limit")).to_have_text(
            "Dose 1,450 mg is over the 1,000 mg maximum for this patient"
        )
        # No raw JSON: the card shows the proposal's fields; the first press of Modify opens
        # the form generated from the schema, filled with the proposal, and sends nothing.
        expect(item.locator("textarea[name=payload]")).to_be_hidden()
        modify = item.locator("form.inbox-decide button[name=decision][value=modify]")
        expect(item.locator(".schema-form")).to_have_count(0)
        modify.click()
        dose = item.get_by_label("Dose (mg)")
        expect(dose).to_have_value("1450")
        expect(item.locator(".schema-form :focus")).to_have_count(1)  # its first field
        expect(item.locator("textarea[name=payload]")).to_be_hidden()

        dose.fill("-5")
        modify.click()

        expect(item.locator(".schema-form .errmsg").first).to_contain_text(
            "Value must be at least 0"
        )
        expect(item.locator(".modify-errors")).to_contain_text("Dose: Value must be at least 0")
        expect(item.locator(".modify-confirm")).to_be_hidden()
        assert self.posts == []

        dose.fill("900")
        modify.click()

        diff = item.locator(".modify-diff")
        expect(diff).to_be_visible()
        expect(diff.locator(".modify-diff-row")).to_have_count(1)
        expect(diff.locator('[data-field="dose_mg"]')).to_have_text("Dose1,450 mg → 900 mg")
        assert self.posts == []  # nothing is sent before the confirm click

        item.locator("button[data-confirm-modify]").click()

        expect(page.locator(f"#interrupt-{interrupt.pk}")).to_have_count(0)
        expect(page.locator("#inbox-decided")).to_contain_text("modify by otto")
        interrupt.refresh_from_db()
        assert (interrupt.status, interrupt.decision) == ("decided", "modify")
        assert interrupt.payload == {"dose_mg": 900, "max_dose_mg": 1000}
        assert interrupt.decided_by.username == "otto"
        assert len(self.posts) == 1 and "decision=modify" in self.posts[0]
        assert page.evaluate("window.__cspViolations") == []
        # Once decided, both the htmx answer and the push delete #interrupt-<pk>: htmx reports
        # the later one's target missing. Harmless; nothing else may be (the push no longer
        # replaces the card inside the deleted item: oversight.fragments.interrupt_update).
        gone = f"htmx:oobErrorNoTarget, #interrupt-{interrupt.pk}"
        assert [text for text in self.console if text != gone] == []
