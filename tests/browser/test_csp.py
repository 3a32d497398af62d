"""The strict Content Security Policy in a real browser: every page an operator uses works
under it, with no violation and no script error, and plotly still draws its figures, on
the first load and when a websocket push swaps the live stack in."""

from __future__ import annotations

import re
import time

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from playwright.sync_api import ConsoleMessage, Page, expect

from loops import services
from loops.declare import sync_declarations
from loops.models import Domain, LoopRun
from oversight.models import Interrupt
from tests.conftest import wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
STRICT = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Runs in every page before its own scripts: what the browser refused, as it reports it.
COLLECT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""
# Every plotly figure of the page, and whether plotly drew it (its svg and its traces).
FIGURES = """() => Array.from(document.querySelectorAll(".plotly-figure")).map((el) => ({
  id: el.id,
  drawn: el.querySelector(".main-svg") !== null,
  traces: (el.data || []).length,
}))"""


class TestContentSecurityPolicy(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, page: Page, celery_worker) -> None:
        self.page = page
        self.errors: list[str] = []
        page.add_init_script(COLLECT_VIOLATIONS)
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _console(self, message: ConsoleMessage) -> None:
        # The admin's pages name no icon, so the browser asks for /favicon.ico: a 404.
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            self.errors.append(f"{message.text} ({message.location['url']})")

    def _open(self, path: str) -> None:
        response = self.page.goto(f"{self.live_server_url}{path}")
        assert response is not None and response.status == 200, path
        assert response.headers["content-security-policy"] == STRICT, path
        expect(self.page.locator("#ws-status")).to_have_text("connected", timeout=10_000)
        self._assert_clean(path)

    def _assert_clean(self, where: str) -> None:
        assert self.page.evaluate("window.__cspViolations") == [], where
        assert self.errors == [], where

    def test_every_page_works_under_the_strict_policy_and_plotly_draws(self):
        sync_declarations()
        users = get_user_model().objects
        with_role(users.create_superuser("olga", password=PASSWORD), "admin")
        stacks = [
            services.run_start(domain="depot", blueprint="depot-stack", input={}) for _ in range(2)
        ]
        # A decision waiting in the inbox (ward-dose proposes over its limit).
        dose = services.run_start(domain="ward", blueprint="ward-dose", input={})
        try:
            self._visit_every_page(stacks, dose)
        finally:
            # Stop the runs and let the worker go idle before the table flush, which
            # otherwise can deadlock with a step still in flight.
            for run in LoopRun.objects.filter(parent=None, state__in=LoopRun.LIVE):
                services.run_cancel(run_id=run.pk)
            wait_for(lambda: not LoopRun.objects.filter(lease_worker__gt="").exists())
            time.sleep(1)

    def _visit_every_page(self, stacks: list[LoopRun], dose: LoopRun) -> None:
        wait_for(lambda: all(run.children.exists() for run in stacks), timeout=30)
        wait_for(lambda: Interrupt.objects.filter(run__root_id=dose.root_id).exists(), timeout=30)

        # The sign-in page is under the policy too.
        response = self.page.goto(f"{self.live_server_url}/loops/domains/depot/")
        assert response is not None
        assert response.headers["content-security-policy"] == STRICT
        self.page.get_by_label("Username").fill("olga")
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("heading", name="Depot")).to_be_visible()
        self._assert_clean("domain page")
        # The socket opens once the deferred scripts ran: plotly.js (4.8 MB) takes seconds
        # to evaluate on a busy CI machine.
        expect(self.page.locator("#ws-status")).to_have_text("connected", timeout=20_000)

        # The domain page: the live stack's icicle and the four activity charts, drawn.
        expect(self.page.locator("#domain-depot-icicle .main-svg").first).to_be_visible()
        figures = self.page.evaluate(FIGURES)
        depot = Domain.objects.get(slug="depot").pk
        charts = [f"domain-{depot}-{name}" for name in ("throughput", "latency", "errors", "cost")]
        assert [f["id"] for f in figures] == ["domain-depot-icicle", *charts]
        assert all(f["drawn"] for f in figures), figures
        assert figures[0]["traces"] == 1
        self._assert_clean("domain page")

        # A push swaps the stack in: the new figure is drawn by app.js, still inline-free.
        labels = "() => document.getElementById('domain-depot-icicle').data[0].labels.length"
        frames = self.page.evaluate(labels)
        services.run_cancel(run_id=stacks[0].pk)
        wait_for(lambda: self.page.evaluate(labels) < frames, timeout=15)
        expect(self.page.locator("#domain-depot-icicle .main-svg").first).to_be_visible()
        self._assert_clean("domain page after a push")

        # A click on a frame of the icicle opens its run (app.js binds it after drawing).
        self.page.locator("#domain-depot-icicle g.slice").first.click()
        expect(self.page).to_have_url(re.compile(r"/loops/runs/\d+/$"))
        self._assert_clean("run page, opened from the icicle")

        self._open("/")
        self._open("/oversight/inbox/")
        expect(self.page.locator("#inbox-list .inbox-item")).to_have_count(1)
        expect(self.page.locator("#inbox-list time.countdown")).not_to_be_empty()
        self._open(f"/loops/runs/{stacks[1].pk}/")
        self._open("/oversight/breakers/")
        self._open("/oversight/audit/")

        # The Django admin, on the same policy (it has no inline script or style either).
        response = self.page.goto(f"{self.live_server_url}/admin/")
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"] == STRICT
        self._assert_clean("admin")
