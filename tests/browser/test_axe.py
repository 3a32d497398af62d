"""WCAG 2.2 AA on every page, in both themes, checked by axe-core; and every page usable at
1440, 1024 and 390 pixels wide, with no sideways scroll of the page itself (issue 17).

axe-core is vendored for the tests only (tests/browser/vendor/axe-core: its LICENSE, MPL-2.0,
and VERSION). It reaches each page as an init script of the browser context, which the
DevTools protocol evaluates outside the page's Content Security Policy: the pages keep their
strict policy while they are checked (no bypass_csp), so what axe sees is what an operator's
browser draws, and axe is never served by the console itself."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from django.urls import Resolver404, resolve
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from loops import services
from loops.declare import sync_declarations
from loops.models import Blueprint, Domain, LoopRun
from oversight.models import Halt, Interrupt
from oversight.services.breakers import breakers_sync
from oversight.services.halts import halt_engage
from tests.conftest import wait_for, with_role
from tests.realms.test_page import paired

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
Scheme = Literal["light", "dark"]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
# Every violation, of any impact, with where it is and what axe says to fix.
RUN_AXE = """async (tags) => {
  const results = await axe.run(document, {runOnly: {type: "tag", values: tags},
                                           resultTypes: ["violations"]});
  return results.violations.map((v) => `${v.id} (${v.impact}): ` + v.nodes.slice(0, 4).map(
    (n) => `${n.target.join(" ")} — ${n.failureSummary.replaceAll("\\n", " ")}`).join(" | "));
}"""
# What sticks out past the viewport, when the page scrolls sideways: the widest few.
WIDER = """(width) => Array.from(document.querySelectorAll("body *"))
  .filter((el) => el.getBoundingClientRect().right > width + 1)
  .slice(0, 5)
  .map((el) => `${el.tagName}.${el.className} ${Math.round(el.getBoundingClientRect().right)}`)"""
WIDTHS = (1024, 390)
# The focused element, and whether a focus ring of 2 px or more shows around it.
FOCUS = """() => {
  const el = document.activeElement, css = getComputedStyle(el);
  const ring = css.outlineStyle !== "none" && parseFloat(css.outlineWidth) >= 2;
  const name = `${el.tagName}.${el.className} ${el.textContent.trim().slice(0, 30)}`;
  return [el === document.body, ring, name];
}"""
TABS = 60  # keys pressed through a page: its header, navigation and first controls
# AXE_SCREENSHOTS=<folder>: also keep a screenshot of every page, theme and width checked.
SHOTS = os.environ.get("AXE_SCREENSHOTS", "")


class TestAccessibility(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _browser(self, browser: Browser, celery_worker) -> None:
        self.browser = browser

    def test_every_page_has_no_axe_violation_in_either_theme_and_fits_every_width(self):
        pages = self._data()
        schemes: tuple[Scheme, ...] = ("light", "dark")
        try:
            problems = [p for scheme in schemes for p in self._check(scheme, pages)]
        finally:
            live = LoopRun.objects.filter(parent=None, state__in=LoopRun.LIVE)
            for run in live.exclude(domain__slug="fed"):  # fed's frames are rows, not runs
                services.run_cancel(run_id=run.pk)
            wait_for(lambda: not LoopRun.objects.filter(lease_worker__gt="").exists())
            time.sleep(1)  # let the worker go idle before the table flush
        assert problems == [], "\n".join(problems)

    def _data(self) -> list[tuple[str, str]]:
        """Something on every page: live stacks with children, a decision waiting, breakers,
        a halt to lift, a remote frame, audit rows; and the pages to check, by name."""
        sync_declarations()
        breakers_sync()
        users = get_user_model().objects
        admin = with_role(users.create_superuser("ada", password=PASSWORD), "admin")
        users.create_user("nora", password=PASSWORD)  # signed in, with no role
        stacks = [services.run_start(domain="depot", blueprint="depot-stack", input={})]
        dose = services.run_start(domain="ward", blueprint="ward-dose", input={})
        paired("b", url="http://127.0.0.1:9")
        fed = Domain.objects.get(slug="fed")
        main = LoopRun.objects.create(
            blueprint=Blueprint.objects.get(name="fed-direct"), domain=fed, state="waiting"
        )
        LoopRun.objects.filter(pk=main.pk).update(root=main)  # its own root, as run_start does
        remote = {"realm": "b", "blueprint": "fed-micro", "task": "41", "state": "working"}
        frame = LoopRun.objects.create(
            blueprint=Blueprint.objects.get(name="b:fed-micro"), domain=fed, parent=main,
            root=main, depth=1, state="waiting", remote=remote,
        )  # fmt: skip
        halt, _ = halt_engage(actor=admin, scope="domain:arena", reason="an axe drill")
        wait_for(lambda: all(run.children.exists() for run in stacks), timeout=30)
        interrupt = wait_for(
            lambda: Interrupt.objects.filter(run__root_id=dose.root_id).first(), timeout=30
        )
        child = stacks[0].children.order_by("id").first()
        assert child is not None and Halt.objects.filter(pk=halt.pk).exists()
        pages = [
            ("overview", "/"),
            ("domain", "/loops/domains/depot/"),
            ("domain with a remote frame", "/loops/domains/fed/"),
            ("run", f"/loops/runs/{stacks[0].pk}/"),
            ("child run", f"/loops/runs/{child.pk}/"),
            ("remote frame", f"/loops/runs/{frame.pk}/"),
            ("approvals", "/oversight/inbox/"),
            ("breakers", "/oversight/breakers/"),
            ("agents", "/loops/agents/"),
            ("audit", "/oversight/audit/"),
            ("halt confirmation", "/oversight/halts/new?scope=domain:depot"),
            ("halt lift", f"/oversight/halts/{halt.pk}/lift"),
            ("realms", "/realms/"),
        ]
        decision = f"/oversight/interrupts/{interrupt.pk}/"
        try:
            resolve(decision)  # the decision page, once it is built (issue 17, part A)
            pages.insert(7, ("decision", decision))
        except Resolver404:
            pass
        return pages

    def _check(self, scheme: Scheme, pages: list[tuple[str, str]]) -> list[str]:
        """One context per theme: the sign-in page, every page signed in as an admin, the
        no-role page; axe on each at 1440 px, and in the light theme each at 1024 and 390
        px too (axe found nothing more there: the same markup, laid out narrower)."""
        context = self.browser.new_context(
            color_scheme=scheme, viewport={"width": 1440, "height": 900}
        )
        context.add_init_script(path=str(AXE))
        page = context.new_page()
        problems: list[str] = []
        try:
            self._open(page, "/accounts/login/", live=False)
            problems += self._axe(page, f"{scheme} login")
            self._sign_in(page, "ada")
            for name, path in pages:
                self._open(page, path)
                problems += self._axe(page, f"{scheme} {name}")
                if scheme == "light" and name in ("overview", "domain", "run", "breakers"):
                    problems += self._focus(page, name)
                # The layout differs by theme in colours only: the widths in the light one,
                # on the same page resized (plotly follows the window).
                for width in WIDTHS if scheme == "light" else ():
                    page.set_viewport_size({"width": width, "height": 900})
                    problems += self._fits(page, width, f"{scheme} {name}")
                page.set_viewport_size({"width": 1440, "height": 900})
            if scheme == "light":  # the sign-in and no-role pages on a phone too
                page.set_viewport_size({"width": 390, "height": 900})
            width = (page.viewport_size or {"width": 1440})["width"]
            self._sign_out(page)
            problems += self._fits(page, width, f"{scheme} login")
            self._sign_in(page, "nora")
            problems += self._axe(page, f"{scheme} no role")
            problems += self._fits(page, width, f"{scheme} no role")
        finally:
            context.close()
        return problems

    def _open(self, page: Page, path: str, *, live: bool = True) -> None:
        response = page.goto(f"{self.live_server_url}{path}")
        assert response is not None and response.status == 200, path
        if live:
            expect(page.locator("#ws-status")).to_have_text("connected", timeout=20_000)
        for figure in page.locator(".plotly-figure").all():  # drawn before it is checked
            expect(figure.locator(".main-svg").first).to_be_attached(timeout=20_000)

    def _sign_in(self, page: Page, username: str) -> None:
        if "/accounts/login/" not in page.url:
            self._open(page, "/accounts/login/", live=False)
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("h1")).to_be_visible()

    def _sign_out(self, page: Page) -> None:
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_label("Username")).to_be_visible()

    def _axe(self, page: Page, where: str) -> list[str]:
        self._shot(page, where)
        return [f"{where}: {violation}" for violation in page.evaluate(RUN_AXE, TAGS)]

    def _focus(self, page: Page, where: str) -> list[str]:
        """Every control reached with Tab shows its focus (WCAG 2.4.7)."""
        unseen = []
        for _ in range(TABS):
            page.keyboard.press("Tab")
            on_body, ring, what = page.evaluate(FOCUS)
            if not on_body and not ring:
                unseen.append(what)
        return [f"{where}: no visible focus on {what}" for what in dict.fromkeys(unseen)]

    def _shot(self, page: Page, where: str) -> None:
        if SHOTS:
            name = "".join(c if c.isalnum() else "-" for c in where)
            page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)

    def _fits(self, page: Page, width: int, where: str) -> list[str]:
        fits = f"document.documentElement.scrollWidth <= {width}"
        try:  # the page's own relayout, and plotly's after its resize event
            page.wait_for_function(fits, timeout=3_000)
        except PlaywrightTimeoutError:
            pass
        if width != 390:
            self._shot(page, f"{where} at {width}")
        scroll = page.evaluate("document.documentElement.scrollWidth")
        if scroll <= width:
            return []
        return [f"{where} at {width}: {scroll} px wide: {page.evaluate(WIDER, width)}"]
