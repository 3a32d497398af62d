"""Two realms in two browsers (issue 16, DESIGN.md section 8 "In the console", H8, H10):
the Realms page follows a pairing and a peer going away without a reload; a remote frame is
drawn in the caller's live stack with its realm, and a click shows what the peer's grant
lets the caller see with a link to the peer's console; a halt in the caller turns the frame
halted on screen, its banner counts the peer realm that confirmed it, and the peer's open
page shows the halt, naming the realm it came from.

Each realm is a real console (tests.realms.conftest: its database, Redis database, Daphne
and worker with beat). A browser context per realm: both serve on 127.0.0.1, and cookies
do not tell ports apart."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.conftest import browser_type_launch_args  # noqa: F401 — Debian's Chromium
from tests.realms.conftest import RealmProcess
from tests.realms.test_federation import admin_token, grant, identity, peer, start, wait_for

pytestmark = pytest.mark.browser

PASSWORD = "a long passphrase"
# What b lets a see of the work a asks for there: everything (realms.sight).
FULL = {"blueprints": "fed-*", "max_depth": 4, "budget": 5.0, "rate_per_minute": 600}
FULL |= {"trace": "full"}
USER = """
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
user, _ = get_user_model().objects.get_or_create(username={name!r})
user.set_password({password!r})
user.save()
user.groups.add(Group.objects.get(name={role!r}))
"""


def person(realm: RealmProcess, name: str, role: str) -> None:
    realm.manage("shell", "-c", USER.format(name=name, password=PASSWORD, role=role))


def sign_in(browser: Browser, realm: RealmProcess, name: str, path: str) -> Page:
    """A page of its own browser context, signed in to the realm as `name`, at `path`."""
    page = browser.new_context().new_page()
    page.goto(f"{realm.url}{path}")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#ws-status")).to_have_text("connected")
    page.evaluate("window.notReloaded = true")
    return page


def two_realms(realms) -> tuple[RealmProcess, RealmProcess, dict[str, str]]:
    a, b = realms("a", 1), realms("b", 2)
    tokens = {r.slug: admin_token(r) for r in (a, b)}
    for realm in (a, b):
        person(realm, "ada", "admin")
        person(realm, "otto", "operator")
    return a, b, tokens


def ask_to_pair(a: RealmProcess, b: RealmProcess, tokens: dict[str, str]) -> None:
    body = {"url": b.url, "fingerprint": identity(b, tokens["b"])["fingerprint"]}
    status, asked = a.api("POST", "/api/v1/realms", tokens["a"], body)
    assert status == 201, asked
    wait_for(lambda: peer(b, tokens["b"], "a"))  # b has the request


def test_the_realms_page_follows_a_pairing_and_a_peer_going_away(realms, browser: Browser):
    a, b, tokens = two_realms(realms)
    ask_to_pair(a, b, tokens)
    on_a = sign_in(browser, a, "ada", "/realms/")
    row = on_a.locator("#peer-b")
    expect(row).to_contain_text("waiting for their admins")

    # b's admin approves the request on b's Realms page (its button, htmx).
    on_b = sign_in(browser, b, "ada", "/realms/")
    expect(on_b.locator("#pair-request-a")).to_contain_text("asks to pair")
    on_b.get_by_role("button", name="Approve a").click()
    expect(on_b.locator("#peer-a .state").first).to_have_text("approved")
    expect(on_b.locator("#pair-request-a")).to_have_count(0)

    # a's page turns approved without a reload, breaker and all.
    expect(row.locator(".state").first).to_have_text("approved", timeout=30_000)
    expect(row).to_have_attribute("data-reachable", "yes")
    expect(row.locator(".breaker")).to_contain_text("Closed")
    grant(a, tokens["a"], "b", inbound=None, outbound=FULL)
    grant(b, tokens["b"], "a", inbound=FULL, outbound=None)
    expect(row.locator(".grant-outbound")).to_contain_text("trace: full")

    # b goes away: a's next call to it (and its probe) fails, and a's page says so.
    b.stop_web()
    start(a, tokens["a"], "fed-direct", {"n": 1})
    expect(row).to_have_attribute("data-reachable", "no", timeout=60_000)
    expect(row.locator(".reachability")).to_contain_text("unreachable")
    assert on_a.evaluate("window.notReloaded") is True


def test_a_remote_frame_shows_its_realm_its_view_and_a_halt_crossing(realms, browser: Browser):
    a, b, tokens = two_realms(realms)
    ask_to_pair(a, b, tokens)
    status, body = b.api("POST", "/api/v1/realms/a/approve", tokens["b"])
    assert status == 200, body
    wait_for(lambda: peer(a, tokens["a"], "b")["status"] == "approved")
    grant(a, tokens["a"], "b", inbound=None, outbound=FULL)
    grant(b, tokens["b"], "a", inbound=FULL, outbound=None)
    run_id = start(a, tokens["a"], "fed-long-direct", {})
    counted = "select count(*) from loops_iteration i join loops_looprun r on r.id = i.run_id"
    wait_for(lambda: b.sql(counted + " where r.origin is not null")[0][0] >= 2, 60)
    [(frame_id,)] = a.sql("select id from loops_looprun where parent_id = %s", (run_id,))
    [(called,)] = b.sql("select id from loops_looprun where origin->>'realm' = 'a'")

    # a's operator watches the domain's live stack: the frame carries b's name.
    stack = sign_in(browser, a, "otto", "/loops/domains/fed/")
    label = f"b: fed-long #{frame_id} · "
    # Until plotly has drawn, the element has no data: the predicate waits rather than throws.
    drawn = "(label) => (document.getElementById('domain-fed-icicle').data?.[0]?.labels ?? [])"
    drawn += ".some((l) => l.startsWith(label) && !l.endsWith('halted'))"
    stack.wait_for_function(drawn, arg=label, timeout=30_000)

    # A click on it shows what b's grant lets a see, and the way to b's console.
    stack.locator("#domain-fed-icicle g.slice", has_text=f"#{frame_id}").click()
    panel = stack.locator("#domain-fed-remote")
    expect(panel).to_contain_text("What b's grant lets this realm see: full", timeout=30_000)
    expect(panel.locator(".remote-summary")).to_contain_text("Iterations")
    expect(panel.locator("a.peer-link")).to_have_attribute("href", f"{b.url}/loops/runs/{called}/")
    expect(panel.locator(".events li").first).to_be_visible()

    # b's operator has a page open; a's operator halts the domain through its confirmation.
    on_b = sign_in(browser, b, "otto", "/loops/domains/fed/")
    confirm = stack.context.new_page()
    confirm.goto(f"{a.url}/oversight/halts/new?scope=domain:fed")
    expect(confirm.locator("main")).to_contain_text("realm b")  # the halt will reach b
    confirm.get_by_label("Reason").fill("drill across")
    confirm.get_by_role("button", name="Halt domain:fed").click()

    # On a's open stack page, live: the frame halted, and b confirmed the halt.
    halted = "(label) => (document.getElementById('domain-fed-icicle').data?.[0]?.labels ?? [])"
    halted += ".some((l) => l === label + 'halted')"
    stack.wait_for_function(halted, arg=label, timeout=30_000)
    banner = stack.locator("#halt-banner")
    expect(banner).to_contain_text("HALTED: domain:fed")
    expect(banner).to_contain_text("1 of 1 peer realm confirmed", timeout=30_000)
    # On b's open page, live: the halt of the run a's call started, named for realm a.
    b_banner = on_b.locator("#halt-banner .halt")
    expect(b_banner).to_contain_text(re.compile(r"HALTED: run:\d+"), timeout=30_000)
    expect(b_banner).to_contain_text("halted by realm a (otto): drill across")
    expect(b_banner).not_to_contain_text("by system")
    expect(b_banner).to_have_attribute("data-realm", "a")
    assert stack.evaluate("window.notReloaded") is True
    assert on_b.evaluate("window.notReloaded") is True


def test_a_remote_interrupt_decided_in_the_caller_leaves_the_peers_inbox(realms, browser: Browser):
    """DESIGN.md H9 on screen: b's interrupt, in work a asked for, waits in both inboxes (in
    a's marked with realm b); a's operator approves it there, and b's open inbox loses it at
    once, while a's shows who decided."""
    a, b, tokens = two_realms(realms)
    ask_to_pair(a, b, tokens)
    status, body = b.api("POST", "/api/v1/realms/a/approve", tokens["b"])
    assert status == 200, body
    wait_for(lambda: peer(a, tokens["a"], "b")["status"] == "approved")
    answers = FULL | {"answer_interrupts": True}
    grant(a, tokens["a"], "b", inbound=None, outbound=answers)
    grant(b, tokens["b"], "a", inbound=answers, outbound=None)
    on_a = sign_in(browser, a, "otto", "/oversight/inbox/")
    on_b = sign_in(browser, b, "otto", "/oversight/inbox/")

    start(a, tokens["a"], "fed-human-direct", {})

    there = on_b.locator("#inbox-list .inbox-item")
    expect(there).to_have_count(1, timeout=60_000)
    expect(there).to_contain_text("confirm the dose")
    here = on_a.locator("#inbox-list .inbox-item")
    expect(here).to_have_count(1, timeout=30_000)
    expect(here.locator(".realm-tag")).to_have_text("realm b")
    expect(here.locator(".remote-address")).to_contain_text("realm b: fed / fed-human")
    on_a.wait_for_timeout(2000)  # one interrupt, one item: however its message arrives
    assert here.count() == 1, here.all_inner_texts()
    here.get_by_role("button", name="Approve").click()
    expect(on_b.locator("#inbox-list .inbox-item")).to_have_count(0, timeout=10_000)
    expect(on_a.locator("#inbox-list .inbox-item")).to_have_count(0)
    expect(on_a.locator("#inbox-decided")).to_contain_text("approve by otto")
    decided = "select decided_by_name, decided_realm from oversight_interrupt"
    assert b.sql(decided) == [("otto", "a")]  # b's own record names a's person and realm
    assert on_a.evaluate("window.notReloaded") is True
    assert on_b.evaluate("window.notReloaded") is True
