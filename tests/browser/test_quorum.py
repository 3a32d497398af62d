"""A two-person decision in Chromium (issue 18; CONCEPTS 39, 40; DESIGN.md H2): a dose over
twice the limit, raised by a run on the real worker, reaches two operators' inboxes live; the
first approval shows on both cards and the interrupt waits, the approve button now saying
it completes the quorum; the second person's approval decides it, and it leaves both
inboxes."""

from __future__ import annotations

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, expect

from loops import services
from loops.declare import sync_declarations
from oversight.models import Interrupt
from tests.conftest import wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"


class TestQuorum(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, page: Page, browser: Browser, celery_worker) -> None:
        self.page = page
        self.browser = browser

    def _open_inbox(self, page: Page, username: str) -> None:
        page.goto(f"{self.live_server_url}/oversight/inbox/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Approval inbox")).to_be_visible()
        expect(page.locator("#ws-status")).to_have_text("connected", timeout=20_000)
        page.evaluate("window.notReloaded = true")

    def test_the_card_shows_the_first_approval_and_waits_for_the_second(self):
        sync_declarations()
        users = get_user_model().objects
        with_role(users.create_user("alice", password=PASSWORD), "operator")
        with_role(users.create_user("bob", password=PASSWORD), "admin")
        alice = self.page
        self._open_inbox(alice, "alice")
        bob = self.browser.new_context().new_page()
        self._open_inbox(bob, "bob")

        # 2,400 mg: over twice ward-dose-quorum's 1,000 mg limit, so two people must approve.
        run = services.run_start(
            domain="ward", blueprint="ward-dose-quorum", input={"mg_per_kg": 30}
        )
        interrupt = wait_for(
            lambda: Interrupt.objects.filter(run__root_id=run.root_id).first(), timeout=30
        )
        item = f"#interrupt-{interrupt.pk}"
        approve = f"{item} button[value=approve]"
        for page in (alice, bob):
            expect(page.locator(f"{item} .interrupt-quorum")).to_contain_text(
                "Needs 2 approvals from different people: none yet; 2 more needed.",
                timeout=15_000,
            )
            expect(page.locator(approve)).to_have_text("Approve (1 of 2; it waits for 1 more)")

        alice.locator(approve).click()

        # The first approval on both cards, pushed; the interrupt stays, waiting for one more.
        for page in (alice, bob):
            quorum = page.locator(f"{item} .interrupt-quorum")
            expect(quorum).to_contain_text("approved by alice (operator) at", timeout=5_000)
            expect(quorum).to_contain_text("1 more needed")
            expect(page.locator(approve)).to_have_text("Approve: completes the quorum (2 of 2)")
        interrupt.refresh_from_db()
        assert interrupt.status == Interrupt.Status.PENDING
        run.refresh_from_db()
        assert run.state == "interrupted"

        bob.locator(approve).click()

        for page in (alice, bob):
            expect(page.locator(item)).to_have_count(0, timeout=5_000)
            decided = page.locator("#inbox-decided")
            expect(decided).to_contain_text("approve by bob")
            expect(decided).to_contain_text("approved by alice (operator) at")
            assert page.evaluate("window.notReloaded") is True
        interrupt.refresh_from_db()
        assert (interrupt.status, interrupt.decision, interrupt.decided_by.username) == (
            "decided",
            "approve",
            "bob",
        )
        assert sorted(interrupt.approvals.values_list("by", flat=True)) == ["alice", "bob"]
        bob.context.close()
