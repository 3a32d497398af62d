"""Noticed (issue 17): a critical escalation raised on the real worker while the console's
tab is in the background becomes a desktop notification (the browser's Notification API,
opted into by the operator, the permission granted in the test); while the tab is in view it
does not, the page shows it. A click on the notification opens the decision.

Headless Chromium keeps every page visible (microsoft/playwright#2286: no API for a
background tab), so the test turns document.hidden on as a switch to another tab would, and
records the Notification constructor's calls: it observes the browser's API, the
notification itself is the browser's."""

from __future__ import annotations

import re

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from playwright.sync_api import Browser, Page, expect

from loops import services
from loops.declare import sync_declarations
from oversight.models import Interrupt
from oversight.services.halts import halt_engage
from tests.conftest import wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
CRITICAL = "severe interaction: warfarin + aspirin"  # ward-interactions' agent escalates it

RECORD_NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  window.__notes = [];
  function Recorded(title, options) {
    const note = new Real(title, options);
    window.__notes.push({ title, body: options.body, tag: options.tag, note });
    return note;
  }
  Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
  Recorded.requestPermission = (...args) => Real.requestPermission(...args);
  window.Notification = Recorded;
})();
"""
# What a switch to another tab does to this one.
HIDE = """
Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
document.dispatchEvent(new Event("visibilitychange"));
"""
NOTES = "window.__notes.map(({ title, body, tag }) => ({ title, body, tag }))"


class TestNotify(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, browser: Browser, celery_worker) -> None:
        self.browser = browser

    def _console(self, username: str) -> Page:
        context = self.browser.new_context()
        context.grant_permissions(["notifications"], origin=self.live_server_url)
        page = context.new_page()
        page.add_init_script(RECORD_NOTIFICATIONS)
        page.goto(f"{self.live_server_url}/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#ws-status")).to_have_text("connected")
        return page

    def _raise_critical(self) -> Interrupt:
        run = services.run_start(domain="ward", blueprint="ward-interactions", input={})
        return wait_for(
            lambda: Interrupt.objects.filter(run__root_id=run.root_id).first(), timeout=30
        )

    def test_a_critical_escalation_in_a_background_tab_raises_a_desktop_notification(self):
        sync_declarations()
        with_role(get_user_model().objects.create_user("otto", password=PASSWORD), "operator")
        page = self._console("otto")

        # Opt in: the header's toggle asks for the permission (granted) and remembers it.
        page.get_by_role("button", name="Desktop alerts: off").click()
        toggle = page.locator("#notify-toggle")
        expect(toggle).to_have_text("Desktop alerts: on")
        expect(toggle).to_have_attribute("aria-pressed", "true")
        # The optional sound (two tones made by WebAudio, nothing fetched), off until asked.
        sound = page.locator("#notify-sound")
        expect(sound).to_have_text("Sound: off")
        sound.click()
        expect(sound).to_have_attribute("aria-pressed", "true")
        page.reload()
        expect(page.locator("#notify-toggle")).to_have_text("Desktop alerts: on")
        expect(sound).to_have_text("Sound: on")
        expect(page.locator("#ws-status")).to_have_text("connected")

        # In view, a critical escalation shows in the header, and no notification is raised.
        seen = self._raise_critical()
        expect(page.locator("#pending-decisions")).to_contain_text("1 pending")
        expect(page.locator("#pending-decisions")).to_have_attribute(
            "data-notify", f"interrupt-{seen.pk}"
        )
        assert page.evaluate(NOTES) == []

        # In the background, the next one becomes a notification.
        page.evaluate(HIDE)
        interrupt = self._raise_critical()
        # The notification is raised as the push is swapped in (htmx:load), in that task.
        expect(page.locator("#pending-decisions")).to_contain_text("2 pending")
        assert page.evaluate(NOTES) == [
            {
                "title": "Critical decision waiting",
                "body": CRITICAL,
                "tag": f"interrupt-{interrupt.pk}",
            }
        ]

        # A halt while in the background is told too, once.
        halt_engage(scope="domain:ward", reason="drill", actor=None)
        expect(page.locator("#halt-banner")).to_contain_text("HALTED: domain:ward")
        notes = page.evaluate(NOTES)
        assert notes[1]["title"] == "Halted: domain:ward"
        assert "drill" in notes[1]["body"] and len(notes) == 2, notes

        # A click on the notification brings the tab forward and opens the decision.
        page.evaluate("window.__notes[0].note.onclick(new Event('click'))")
        expect(page).to_have_url(re.compile(rf"/oversight/interrupts/{interrupt.pk}/$"))
        page.context.close()

    def test_without_opting_in_nothing_is_raised(self):
        sync_declarations()
        with_role(get_user_model().objects.create_user("otto", password=PASSWORD), "operator")
        page = self._console("otto")
        expect(page.locator("#notify-toggle")).to_have_text("Desktop alerts: off")
        page.evaluate(HIDE)

        interrupt = self._raise_critical()

        expect(page.locator("#pending-decisions")).to_have_attribute(
            "data-notify", f"interrupt-{interrupt.pk}"
        )
        assert page.evaluate(NOTES) == []
        page.context.close()
