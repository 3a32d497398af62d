"""A page whose socket stays open while Redis restarts catches up without a reload.

Daphne's subscription to Redis takes a second or two to come back after a restart, so a push
sent meanwhile goes to nobody (or fails with Redis), and the page's socket, open throughout,
never reopens to resync. The pushes' numbers show the gap (common.push, console.consumers):
the next push of the group, the session worker's liveness beat (every 5 s), makes the page
fetch itself. Redis is crashed as tests/faults/test_redis_restart.py does."""

from __future__ import annotations

import time

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from loops.declare import sync_declarations
from loops.models import LoopRun
from oversight.services import halts
from tests.conftest import own_redis, redis_crash, redis_server_id, wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
# Counts the pushes of the worker count (CONSOLE_GROUP, every liveness beat) the page got.
COUNT_BEATS = """() => {
  window.beats = 0;
  document.body.addEventListener("htmx:wsAfterMessage", (e) => {
    if (String(e.detail.message).includes('id="workers"')) window.beats += 1;
  });
}"""


class TestRedisResync(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, page: Page, celery_worker) -> None:
        self.page = page

    def test_a_page_catches_up_on_a_halt_pushed_while_redis_restarted(self):
        client = own_redis()  # skipped, before anything starts, against anybody else's
        sync_declarations()
        users = get_user_model().objects
        with_role(users.create_user("otto", password=PASSWORD), "operator")
        admin = with_role(users.create_user("ada", password=PASSWORD), "admin")

        page = self.page
        page.goto(f"{self.live_server_url}/")
        page.get_by_label("Username").fill("otto")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#ws-status")).to_have_text("connected")
        banner = page.locator("#halt-banner")
        expect(banner).not_to_contain_text("HALTED")
        page.evaluate(COUNT_BEATS)
        page.evaluate("window.notReloaded = true")
        # A beat has numbered this socket's console pushes: the baseline a gap is seen from.
        page.wait_for_function("() => window.beats >= 1", timeout=30_000)

        halt = None
        try:
            before = redis_crash(client)
            # While Redis is down the halt commits; its banner's push is lost (or goes to
            # nobody, sent before Daphne has subscribed again).
            assert redis_server_id(client) is None
            halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="outage")
            wait_for(lambda: redis_server_id(client) not in (None, before), 30)

            # Back: the next beat shows the gap, and the page fetches what it missed.
            expect(banner).to_contain_text("HALTED: domain:depot", timeout=30_000)
            expect(banner).to_contain_text("outage")
            expect(page.locator("#ws-status")).to_have_text("connected")
            assert page.evaluate("window.notReloaded") is True
        finally:
            wait_for(lambda: redis_server_id(client) is not None, 30)  # up for the tests after this

        # And still live: the lift arrives as an ordinary push.
        halts.halt_lift(halt_id=halt.pk, actor=admin, reason="back")
        expect(banner).not_to_contain_text("HALTED", timeout=15_000)
        assert page.evaluate("window.notReloaded") is True

        wait_for(lambda: not LoopRun.objects.filter(lease_worker__gt="").exists())
        time.sleep(1)
