"""Pages whose websocket drops catch up when it reconnects, without a reload: what was pushed
while they were away (a halt, a new interrupt) is on screen once the socket is back, and what
a person was typing in the inbox is still there."""

from __future__ import annotations

import os
import signal
import time
from functools import partial

import pytest
from channels.testing import ChannelsLiveServerTestCase
from channels.testing.live import make_application, set_database_connection
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from loops import services
from loops.declare import sync_declarations
from loops.models import Event, LoopRun
from oversight.models import Halt, Interrupt
from oversight.services import halts
from tests.conftest import wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"


class TestReconnect(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, page: Page, celery_worker) -> None:
        self.page = page

    def _kill_daphne(self) -> None:
        """SIGKILL the live server, as a crash would: its sockets close without a goodbye."""
        process = type(self)._server_process
        os.kill(process.pid, signal.SIGKILL)
        process.join(10)

    def _start_daphne_again(self) -> None:
        """A new Daphne on the same port, as a supervisor would restart it."""
        cls = type(self)
        process = cls.ProtocolServerProcess(
            cls.host,
            partial(make_application, static_wrapper=None),
            setup=set_database_connection,
            port=cls._port,
        )
        process.start()
        assert process.ready.wait(30), "Daphne did not come back"
        cls._server_process = process  # tearDownClass stops this one

    def test_pages_that_lost_their_socket_catch_up_when_it_reconnects(self):
        sync_declarations()
        users = get_user_model().objects
        admin = with_role(users.create_user("ada", password=PASSWORD), "admin")
        run = services.run_start(domain="depot", blueprint="depot-loop", input={})
        wait_for(lambda: run.iterations.count() >= 1)

        page = self.page
        page.goto(f"{self.live_server_url}/")
        page.get_by_label("Username").fill("ada")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#ws-status")).to_have_text("connected")
        card = page.locator("#domain-depot-card")
        expect(card).not_to_have_attribute("data-state", "halted")
        page.evaluate("window.notReloaded = true")
        # A second page: the inbox, with a comment half typed on a pending decision.
        first = services.run_start(domain="ward", blueprint="ward-dose", input={})
        waiting = wait_for(lambda: Interrupt.objects.filter(run=first).first(), timeout=30)
        inbox = page.context.new_page()
        inbox.goto(f"{self.live_server_url}/oversight/inbox/")
        expect(inbox.locator("#ws-status")).to_have_text("connected")
        comment = inbox.locator(f"#interrupt-{waiting.pk}-comment")
        comment.fill("checking the chart first")
        inbox.evaluate("window.notReloaded = true")

        self._kill_daphne()
        for away in (page, inbox):
            expect(away.locator("#ws-status")).to_have_text("disconnected, retrying…")

        # While the pages are away, the domain is halted and a new decision is asked for:
        # the pushes go to nobody.
        halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="away")
        second = services.run_start(domain="ward", blueprint="ward-dose", input={})
        missed = wait_for(lambda: Interrupt.objects.filter(run=second).first(), timeout=30)
        time.sleep(0.5)
        expect(card).not_to_have_attribute("data-state", "halted")  # it really missed it
        expect(inbox.locator(f"#interrupt-{missed.pk}")).to_have_count(0)

        self._start_daphne_again()
        # htmx's ws extension reconnects with backoff; the page then fetches what it missed.
        expect(page.locator("#ws-status")).to_have_text("connected", timeout=30_000)
        expect(card).to_have_attribute("data-state", "halted", timeout=10_000)
        expect(page.locator("#halt-banner")).to_contain_text("HALTED: domain:depot")
        expect(page.locator("#halt-banner")).to_contain_text("away")
        expect(page.locator("#overview-totals")).to_contain_text("1 halted domains")
        assert page.evaluate("window.notReloaded") is True
        expect(inbox.locator("#ws-status")).to_have_text("connected", timeout=30_000)
        expect(inbox.locator(f"#interrupt-{missed.pk}")).to_contain_text("over the limit")
        expect(comment).to_have_value("checking the chart first")  # nothing typed is lost
        assert inbox.evaluate("window.notReloaded") is True

        # No halt lost with Daphne: it still holds the domain's run.
        assert Halt.objects.get(pk=halt.pk).is_active
        assert LoopRun.objects.get(pk=run.pk).state == "halted"
        # No decision lost: the one the page missed is decided from it, and applied once.
        inbox.locator(f"#interrupt-{missed.pk} button[value=approve]").click()
        expect(inbox.locator(f"#interrupt-{missed.pk}")).to_have_count(0)
        decided = wait_for(
            lambda: LoopRun.objects.filter(pk=second.pk, state__in=LoopRun.TERMINAL).first(), 30
        )
        assert Interrupt.objects.get(pk=missed.pk).status == "decided"
        assert decided.state == "succeeded"
        assert Event.objects.filter(run=second, type="decision.applied").count() == 1

        # And it is live again: the lift arrives as an ordinary push.
        halts.halt_lift(halt_id=halt.pk, actor=admin, reason="back")
        expect(card).not_to_have_attribute("data-state", "halted")
        expect(page.locator("#halt-banner")).not_to_contain_text("HALTED")
        assert LoopRun.objects.get(pk=run.pk).state == "running"  # its prior state

        for live in (run, first):  # second ended with its decision
            services.run_cancel(run_id=live.pk)
        wait_for(lambda: not LoopRun.objects.filter(lease_worker__gt="").exists())
        time.sleep(1)
