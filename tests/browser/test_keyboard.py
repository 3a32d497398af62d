"""Fast (issue 17): a pending decision answered from the keyboard alone, from the overview,
with focus kept where an operator expects it after every push; and the same decision on a
phone's width, with the halt within reach and no sideways scrolling.

The decision journey, as the issue's note counts it:
- keyboard: u (the header's most urgent decision) · a (approve) · Enter (confirm): 3 keys;
  through the inbox: i · j · a · Enter: 4 keys;
- mouse or touch: the header's pending link · Approve: 2 clicks.
"""

from __future__ import annotations

import re

import pytest
from channels.testing import ChannelsLiveServerTestCase
from django.contrib.auth import get_user_model
from django.db import transaction
from playwright.sync_api import Browser, Page, expect

from loops import services
from loops.declare import sync_declarations
from oversight.models import Alert, Interrupt
from oversight.selectors import RECENT_ALERTS
from oversight.services.alerts import alert_raise
from oversight.services.interrupts import interrupt_decide
from tests.conftest import wait_for, with_role

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
REASON = "dose_mg = 1600 is over the limit 1000"
KEYBOARD_JOURNEY = ["u", "a", "Enter"]
INBOX_JOURNEY = ["i", "j", "a", "Enter"]
NO_SIDEWAYS_SCROLL = "document.documentElement.scrollWidth <= 390"


class TestKeyboard(ChannelsLiveServerTestCase):
    serve_static = False  # whitenoise serves the collected files, as in production

    @pytest.fixture(autouse=True)
    def _pages(self, page: Page, browser: Browser, celery_worker) -> None:
        self.page = page
        self.browser = browser
        self.pressed: list[str] = []

    def _sign_in(self, page: Page, username: str) -> None:
        """The sign-in form, from the keyboard too: type, then Enter."""
        page.goto(f"{self.live_server_url}/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.keyboard.press("Enter")
        expect(page.locator("#ws-status")).to_have_text("connected")

    def _press(self, page: Page, key: str) -> None:
        self.pressed.append(key)
        page.keyboard.press(key)

    def _raise(self, blueprint: str = "ward-dose") -> Interrupt:
        """A run on the real worker stops for a human: ward-dose proposes 1,600 mg."""
        run = services.run_start(domain="ward", blueprint=blueprint, input={})
        return wait_for(
            lambda: Interrupt.objects.filter(run__root_id=run.root_id).first(), timeout=30
        )

    def test_from_the_overview_to_decided_with_three_keys(self):
        sync_declarations()
        users = get_user_model().objects
        alice = with_role(users.create_user("alice", password=PASSWORD), "operator")
        page = self.page
        self._sign_in(page, "alice")
        header = page.locator("#pending-decisions")
        expect(header).to_contain_text("No decisions pending")

        interrupt = self._raise()

        # The header follows without a reload: one pending, and the link to it.
        expect(header).to_contain_text("1 pending")
        expect(header.locator("a[data-urgent]")).to_have_attribute(
            "href", f"/oversight/interrupts/{interrupt.pk}/"
        )
        self._press(page, "u")
        expect(page).to_have_url(re.compile(rf"/oversight/interrupts/{interrupt.pk}/$"))
        expect(page.locator("#ws-status")).to_have_text("connected")
        expect(page.locator(f"#interrupt-{interrupt.pk}")).to_contain_text(REASON)

        self._press(page, "a")
        prompt = page.locator(f"#interrupt-{interrupt.pk} .key-confirm")
        expect(prompt).to_contain_text("Approve? Enter to confirm, Esc to cancel.")
        expect(prompt.get_by_role("button", name="Confirm: Approve")).to_be_focused()
        # Nothing is sent before the confirmation: Esc cancels, focus back on the decision.
        page.keyboard.press("Escape")
        expect(prompt).to_have_count(0)
        expect(page.locator(f"#interrupt-{interrupt.pk}")).to_be_focused()
        interrupt.refresh_from_db()
        assert interrupt.status == Interrupt.Status.PENDING
        self.pressed.remove("a")  # the cancelled try is not part of the journey

        self._press(page, "a")
        self._press(page, "Enter")

        decided = wait_for(
            lambda: Interrupt.objects.filter(pk=interrupt.pk, status="decided").first()
        )
        assert (decided.decision, decided.decided_by_id) == ("approve", alice.pk)
        assert self.pressed == KEYBOARD_JOURNEY and len(self.pressed) == 3
        expect(header).to_contain_text("No decisions pending")
        # Focus never falls to <body>: with nothing left to decide it is on the header's link.
        expect(header.locator("a")).to_be_focused()

    def test_focus_moves_to_the_next_decision_after_a_decision_and_after_a_push(self):
        sync_declarations()
        users = get_user_model().objects
        alice = with_role(users.create_user("alice", password=PASSWORD), "operator")
        bob = with_role(users.create_user("bob", password=PASSWORD), "operator")
        raised = [self._raise() for _ in range(3)]
        page = self.page
        self._sign_in(page, "alice")
        expect(page.locator("#pending-decisions")).to_contain_text("3 pending")

        self._press(page, "i")
        expect(page.get_by_role("heading", name="Approval inbox")).to_be_visible()
        expect(page.locator("#ws-status")).to_have_text("connected")
        order = page.eval_on_selector_all("#inbox-list .inbox-item", "els => els.map(e => e.id)")
        assert sorted(order) == sorted(f"interrupt-{i.pk}" for i in raised)
        self._press(page, "j")
        expect(page.locator(f"#{order[0]}")).to_be_focused()
        self._press(page, "a")
        self._press(page, "Enter")

        # Decided: the item leaves, and focus goes to the next pending decision.
        expect(page.locator(f"#{order[0]}")).to_have_count(0)
        expect(page.locator(f"#{order[1]}")).to_be_focused()
        assert self.pressed == INBOX_JOURNEY
        first = Interrupt.objects.get(pk=int(order[0].split("-")[1]))
        assert (first.status, first.decided_by_id) == ("decided", alice.pk)

        # Bob decides the focused one elsewhere: its push removes it, focus moves on.
        interrupt_decide(interrupt_id=int(order[1].split("-")[1]), actor=bob, decision="approve")
        expect(page.locator(f"#{order[1]}")).to_have_count(0)
        expect(page.locator(f"#{order[2]}")).to_be_focused()

        # The decision buttons are reached by Tab too, with a visible focus ring.
        approve = page.locator(f"#{order[2]} button[name=decision][value=approve]")
        for _ in range(20):
            if approve.evaluate("el => el === document.activeElement"):
                break
            page.keyboard.press("Tab")
        expect(approve).to_be_focused()
        assert approve.evaluate("el => getComputedStyle(el).outlineStyle") != "none"

    def test_on_a_phone_an_operator_reads_and_decides_and_can_reach_the_halt(self):
        sync_declarations()
        users = get_user_model().objects
        otto = with_role(users.create_user("otto", password=PASSWORD), "operator")
        interrupt = self._raise()
        context = self.browser.new_context(
            viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True
        )
        phone = context.new_page()
        self._sign_in(phone, "otto")
        assert phone.evaluate(NO_SIDEWAYS_SCROLL), "the overview scrolls sideways"

        # One tap on the header's most urgent decision, one on Approve: two in all.
        phone.locator("#pending-decisions a[data-urgent]").tap()
        expect(phone).to_have_url(re.compile(rf"/oversight/interrupts/{interrupt.pk}/$"))
        item = phone.locator(f"#interrupt-{interrupt.pk}")
        expect(item).to_contain_text(REASON)
        assert phone.evaluate(NO_SIDEWAYS_SCROLL), "the decision page scrolls sideways"
        approve = item.locator("button[name=decision][value=approve]")
        approve.scroll_into_view_if_needed()
        box = approve.bounding_box()
        assert box and 0 <= box["x"] and box["x"] + box["width"] <= 390
        approve.tap()

        decided = wait_for(
            lambda: Interrupt.objects.filter(pk=interrupt.pk, status="decided").first()
        )
        assert (decided.decision, decided.decided_by_id) == ("approve", otto.pk)

        # The halt: from the overview, the ward's halt, then its confirmation's button.
        phone.get_by_role("link", name="Overview").tap()
        halt = phone.locator('a[href="/oversight/halts/new?scope=domain:ward"]')
        halt.scroll_into_view_if_needed()
        expect(halt).to_be_visible()
        halt.tap()
        button = phone.get_by_role("button", name="Halt domain:ward")
        button.scroll_into_view_if_needed()
        expect(button).to_be_visible()
        box = button.bounding_box()
        assert box and box["x"] + box["width"] <= 390
        assert phone.evaluate(NO_SIDEWAYS_SCROLL), "the halt page scrolls sideways"
        context.close()

    def test_the_help_the_alerts_panel_and_keys_while_typing(self):
        sync_declarations()
        with_role(get_user_model().objects.create_user("ada", password=PASSWORD), "admin")
        interrupt = self._raise()
        page = self.page
        self._sign_in(page, "ada")

        # ? shows the keys, Esc hides them and gives focus back.
        page.keyboard.press("?")
        help_panel = page.get_by_role("dialog", name="Keyboard")
        expect(help_panel).to_be_visible()
        expect(help_panel).to_be_focused()
        expect(help_panel).to_contain_text("open the most urgent decision")
        expect(page.locator("#keys-help-open")).to_have_attribute("aria-expanded", "true")
        page.keyboard.press("Escape")
        expect(help_panel).to_be_hidden()

        # The alerts are a panel behind a count that follows the pushes.
        summary = page.locator("#alerts-panel summary")
        alerts = page.locator("#alerts .alert")
        before = alerts.count()  # the escalation's own alert, if any
        expect(summary).to_have_text(f"Alerts ({before})")
        with transaction.atomic():
            alert_raise(kind="breaker.opened", title="Breaker ward-calls opened", level="critical")
        expect(summary).to_have_text(f"Alerts ({before + 1})")
        alert = alerts.filter(has_text="Breaker ward-calls opened")
        expect(alert).to_be_hidden()  # closed: the page's content is not pushed down
        summary.focus()
        page.keyboard.press("Enter")
        expect(alert).to_be_visible()
        alert.get_by_role("button", name="Acknowledge").click()
        expect(alert).to_have_count(0)
        expect(summary).to_have_text(f"Alerts ({before})")

        # Typing in a field is typing: "a" in the comment is a letter, not an approval.
        page.goto(f"{self.live_server_url}/oversight/inbox/")
        comment = page.locator(f"#interrupt-{interrupt.pk}-comment")
        comment.focus()
        page.keyboard.type("a reason")
        expect(comment).to_have_value("a reason")
        expect(page.locator(".key-confirm")).to_have_count(0)
        # r asks for the reason in its confirmation, which sends nothing without one.
        page.keyboard.press("Escape")
        page.locator(f"#interrupt-{interrupt.pk}").focus()
        page.keyboard.press("r")
        reason = page.locator(".key-confirm-reason")
        expect(reason).to_be_focused()
        expect(reason).to_have_value("a reason")
        reason.fill("")
        page.keyboard.press("Enter")
        expect(page.locator(".key-confirm")).to_contain_text("A rejection needs a reason")
        page.keyboard.type("not for this patient")
        page.keyboard.press("Enter")
        decided = wait_for(
            lambda: Interrupt.objects.filter(pk=interrupt.pk, status="decided").first()
        )
        assert (decided.decision, decided.comment) == ("reject", "not for this patient")
        # Decided, the escalation's "Decision needed" alert leaves the feed by itself.
        asking = Alert.objects.get(kind="interrupt.raised", target_id=str(interrupt.pk))
        assert asking.acknowledged_at is not None and asking.acknowledged_by is None
        expect(page.locator(f"#alert-{asking.pk}")).to_have_count(0)

        # The feed holds the newest RECENT_ALERTS; "+" says that older ones are left out.
        Alert.objects.bulk_create(
            Alert(kind="breaker.opened", title=f"Old alert {n}") for n in range(RECENT_ALERTS + 1)
        )
        page.reload()
        expect(summary).to_have_text(f"Alerts ({RECENT_ALERTS}+)")
        expect(alerts).to_have_count(RECENT_ALERTS)
        with transaction.atomic():
            alert_raise(kind="breaker.opened", title="Breaker ward-db opened", level="critical")
        expect(alerts.first).to_contain_text("Breaker ward-db opened")
        expect(alerts).to_have_count(RECENT_ALERTS)  # the oldest left the page
        expect(summary).to_have_text(f"Alerts ({RECENT_ALERTS}+)")
