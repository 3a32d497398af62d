from __future__ import annotations

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from django.db import connection
from playwright.sync_api import Page, expect

from tests.conftest import start_worker, with_role


@pytest.mark.browser
class TestLiveConnection(ChannelsLiveServerTestCase):
    """Daphne in a child process on the test database; Debian's Chromium drives the page."""

    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _page(self, page: Page, celery_worker) -> None:
        self.page = page

    def test_it_signs_in_and_shows_the_connection_and_the_pushed_worker_count(self):
        with_role(get_user_model().objects.create_user("operator", password="a long passphrase"))
        page = self.page

        page.goto(f"{self.live_server_url}/")
        page.get_by_label("Username").fill("operator")
        page.get_by_label("Password").fill("a long passphrase")
        page.get_by_role("button", name="Sign in").click()

        expect(page.locator("#ws-status")).to_have_text("connected")
        expect(page.locator("#workers")).to_have_text("1 worker")

        # A worker joining is pushed to the open page by the workers' liveness beat.
        second = start_worker(connection.settings_dict["NAME"], name="joining")
        try:
            expect(page.locator("#workers")).to_have_text("2 workers", timeout=15_000)
        finally:
            second.stop()
        expect(page.locator("#workers")).to_have_text("1 worker", timeout=15_000)
