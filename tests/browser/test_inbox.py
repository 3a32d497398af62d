"""The approval inbox as two operators see it live: a policy interrupt raised by a run on the
real worker appears in both inboxes without a reload; one approves; it leaves the other's."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, expect

from common.push import INBOX_GROUP, push_html
from loops import services
from loops.declare import sync_declarations
from oversight.models import Interrupt
from tests.conftest import wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
REASON = "dose_mg = 1600 is over the limit 1000"


class TestInbox(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, page: Page, browser: Browser, celery_worker) -> None:
        self.page = page
        self.browser = browser

    def _open_inbox(self, page: Page, username: str, seen: list[str]) -> None:
        page.on("request", lambda request: seen.append(request.url))
        page.goto(f"{self.live_server_url}/oversight/inbox/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Approval inbox")).to_be_visible()
        expect(page.locator("#ws-status")).to_have_text("connected")
        page.evaluate("window.notReloaded = true")

    def test_an_interrupt_appears_live_and_leaves_the_other_inbox_when_approved(self):
        sync_declarations()
        users = get_user_model().objects
        with_role(users.create_user("alice", password=PASSWORD), "operator")
        with_role(users.create_user("bob", password=PASSWORD), "operator")
        seen: list[str] = []
        alice = self.page
        self._open_inbox(alice, "alice", seen)
        bob = self.browser.new_context().new_page()
        self._open_inbox(bob, "bob", seen)
        expect(alice.locator("#inbox-list .inbox-item")).to_have_count(0)

        # ward-dose proposes 1,600 mg on the real worker: over the limit, a policy interrupt.
        run = services.run_start(domain="ward", blueprint="ward-dose", input={})
        interrupt = wait_for(
            lambda: Interrupt.objects.filter(run__root_id=run.root_id).first(), timeout=30
        )
        item = f"#interrupt-{interrupt.pk}"
        for page in (alice, bob):
            expect(page.locator(item)).to_contain_text(REASON, timeout=15_000)
            expect(page.locator(f"{item} time.countdown")).to_have_attribute(
                "datetime", interrupt.deadline_at.isoformat()
            )
            # The controls come with the pushed card, shown to those who may decide.
            expect(page.locator(f"{item} button[value=approve]")).to_be_visible()

        alice.locator(f"{item} button[value=approve]").click()

        expect(bob.locator(item)).to_have_count(0, timeout=3_000)
        expect(bob.locator("#inbox-list .inbox-item")).to_have_count(0)
        expect(alice.locator(item)).to_have_count(0)
        expect(alice.locator("#inbox-decided")).to_contain_text("approve by alice")
        for page in (alice, bob):
            assert page.evaluate("window.notReloaded") is True
        interrupt.refresh_from_db()
        assert (interrupt.status, interrupt.decided_by.username) == ("decided", "alice")

        # The decided list keeps its newest 20 (a page open a whole shift would keep every
        # card), and says where the older ones are. 20 more cards, pushed as decided ones are:
        decided = alice.locator("#inbox-decided > *")
        expect(alice.locator("#inbox-decided ~ .list-more")).to_be_hidden()
        for n in range(20):
            card = f'<article id="bench-decided-{n}" class="interrupt">decided {n}</article>'
            push_html(INBOX_GROUP, f'<div hx-swap-oob="afterbegin:#inbox-decided">{card}</div>')
        expect(decided.first).to_have_text("decided 19")
        expect(decided).to_have_count(20)
        expect(alice.locator(f"#interrupt-{interrupt.pk}-card")).to_have_count(0)  # the oldest
        expect(alice.locator("#inbox-decided ~ .list-more")).to_contain_text(
            "Older decisions left this page"
        )

        # Nothing was fetched from anywhere but the live server: no CDN.
        here = urlsplit(self.live_server_url).netloc
        assert seen and all(
            urlsplit(url).netloc == here for url in seen if not url.startswith("data:")
        ), seen
        bob.context.close()
