"""A domain's live stack as a viewer watches it: a halt turns its frames halted on screen and
a lift brings them back, without a reload; the viewer has no controls, and posting anyway
from the browser is refused and changes nothing."""

from __future__ import annotations

import time

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from playwright.sync_api import Page, expect

from loops import services
from loops.declare import sync_declarations
from loops.models import LoopRun
from oversight.models import AuditEvent, Halt
from oversight.services import halts
from tests.conftest import wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
STACK = "#domain-depot-stack"

# Posts the way htmx would, with the page's own CSRF header, and answers the status code.
POST_AS_THE_PAGE = """async ([url, body]) => {
  const headers = JSON.parse(document.body.getAttribute("hx-headers"));
  headers["content-type"] = "application/x-www-form-urlencoded";
  headers["hx-request"] = "true";
  const response = await fetch(url, {method: "POST", headers, body});
  return response.status;
}"""


class TestDomainStack(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, page: Page, celery_worker) -> None:
        self.page = page

    def _sign_in(self, page: Page, username: str, path: str) -> None:
        page.goto(f"{self.live_server_url}{path}")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#ws-status")).to_have_text("connected")

    def _icicle_labels(self, page: Page) -> list[str]:
        """What plotly drew: the labels of the icicle's sectors ('<blueprint> #<id> · <state>')."""
        return page.evaluate(
            "() => Array.from(document.getElementById('domain-depot-icicle').data[0].labels)"
        )

    def test_a_viewer_watches_frames_turn_halted_and_back_but_cannot_act(self):
        sync_declarations()
        users = get_user_model().objects
        with_role(users.create_user("vera", password=PASSWORD), "viewer")
        admin = with_role(users.create_user("ada", password=PASSWORD), "admin")
        runs = [
            services.run_start(domain="depot", blueprint="depot-loop", input={}) for _ in range(2)
        ]
        wait_for(lambda: all(run.iterations.count() >= 1 for run in runs))  # on the worker

        viewer = self.page
        self._sign_in(viewer, "vera", "/loops/domains/depot/")
        expect(viewer.locator(f'{STACK} li[data-state="running"]')).to_have_text("2 running")
        expect(viewer.locator(f"{STACK} .js-plotly-plot")).to_be_visible()
        viewer.evaluate("window.notReloaded = true")

        # Roles decide what is shown: no halt, pause or lift control for a viewer.
        expect(viewer.locator("text=Halt this domain")).to_have_count(0)
        expect(viewer.get_by_role("button", name="Pause")).to_have_count(0)
        expect(viewer.locator(".halt-lift")).to_be_hidden()

        # An operator halts the domain elsewhere: the frames turn halted on the viewer's
        # screen, in the chart and in its key.
        halt, _ = halts.halt_engage(actor=admin, scope="domain:depot", reason="drill")
        expect(viewer.locator(f'{STACK} li[data-state="halted"]')).to_have_text("2 halted")
        expect(viewer.locator(f'{STACK} li[data-state="running"]')).to_have_count(0)
        labels = self._icicle_labels(viewer)
        assert len(labels) == 2 and all(label.endswith("· halted") for label in labels), labels
        expect(viewer.locator("#halt-banner")).to_contain_text("HALTED: domain:depot")

        # The server refuses the viewer whatever the page shows: halting, lifting, pausing.
        audited = AuditEvent.objects.count()
        for url, body in [
            ("/oversight/halts/", "scope=domain:depot&reason=mine"),
            (f"/oversight/halts/{halt.pk}/lift", "reason=mine"),
            (f"/loops/runs/{runs[0].pk}/resume", ""),
            (f"/loops/runs/{runs[0].pk}/cancel", ""),
        ]:
            assert viewer.evaluate(POST_AS_THE_PAGE, [url, body]) == 403, url
        assert AuditEvent.objects.count() == audited
        assert Halt.objects.filter(lifted_at__isnull=True).count() == 1
        assert set(
            LoopRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("state", flat=True)
        ) == {"halted"}

        # The lift brings the frames back to running on screen.
        halts.halt_lift(halt_id=halt.pk, actor=admin, reason="drill over")
        expect(viewer.locator(f'{STACK} li[data-state="running"]')).to_have_text("2 running")
        expect(viewer.locator(f'{STACK} li[data-state="halted"]')).to_have_count(0)
        expect(viewer.locator("#halt-banner")).not_to_contain_text("HALTED")
        assert viewer.evaluate("window.notReloaded") is True

        # Stop the depot runs and let the worker go idle before the table flush, which
        # otherwise can deadlock with a step still in flight.
        for run in runs:
            services.run_cancel(run_id=run.pk)
        wait_for(lambda: not LoopRun.objects.filter(lease_worker__gt="").exists())
        time.sleep(1)
