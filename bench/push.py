"""Worker event → visible in connected consoles (DESIGN.md section 6), with 1 and with N
browsers, against a bare push measured in the same run.

The consoles are Chromium pages (Playwright) on the approval inbox, served by a real Daphne.
The worker event is an interrupt raised by a bench-escalate run on the worker: the interrupt
row is written in the step's transaction, and its item is pushed after commit to every open
inbox. A MutationObserver in each page stamps the moment the item enters the DOM, on the same
clock as the interrupt's `created_at` (one machine), so the figure is created_at → in the DOM
of every page, and includes the rest of the worker's transaction. The browser paints it at its
next frame. The baseline is a bare fragment sent by the benchmark process itself through the
channel layer (group_send → Redis → Daphne → websocket → htmx swap), stamped just before the
send.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Each page stands for an operator's console in the foreground of their own machine:
    # no background-tab throttling of its renderer.
    "--disable-renderer-backgrounding",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
]
# Stamps, in epoch milliseconds, when an element with a watched id first enters the DOM.
OBSERVE = """
window.benchSeen = {};
new MutationObserver(function (records) {
  var now = performance.timeOrigin + performance.now();
  records.forEach(function (record) {
    record.addedNodes.forEach(function (node) {
      var id = node.id || "";
      var watched = id.indexOf("interrupt-") === 0 || id.indexOf("bench-ping-") === 0;
      if (watched && !(id in window.benchSeen)) window.benchSeen[id] = now;
    });
  });
}).observe(document, {subtree: true, childList: true});
"""


# How often the benchmark asks PostgreSQL whether its interrupt exists, or is decided. Its
# figures are timestamps taken where they happen (created_at, decided_at, the page's clock),
# so this polling only has to find them; a query every 2 ms (bench.common.wait_for's
# default) took CPU from the worker and Daphne on this 2-core machine during the very
# interval being measured.
WATCH_POLL = 0.05


def push_latency(base_url: str, browsers: int, samples: int, gap: float) -> dict[str, Any]:
    """Open `browsers` inboxes; send `samples` bare pushes, then raise `samples` interrupts
    on the worker, `gap` seconds apart. Every (page, event) pair is one sample."""
    from django.conf import settings
    from django.db import connections
    from playwright.sync_api import sync_playwright

    from bench.common import admin_user, percentiles, session_key, stop_all, wait_for
    from common.push import CONSOLE_GROUP, push_html
    from loops import services
    from oversight.models import Interrupt

    cookie = session_key(admin_user())
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context()
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base_url}]
        )
        context.add_init_script(OBSERVE)
        pages = []
        for _ in range(browsers):
            page = context.new_page()
            page.goto(f"{base_url}/oversight/inbox/")
            # A selector, not a function: the console's CSP forbids the eval that would need.
            page.wait_for_selector("#ws-status[data-state='connected']", state="attached")
            pages.append(page)
        time.sleep(1)  # let the last sockets join the group

        def ping(element: str) -> float:
            sent = time.time() * 1000
            html = f'<div hx-swap-oob="afterbegin:#inbox-decided"><p id="{element}">ping</p></div>'
            push_html(CONSOLE_GROUP, html)
            return sent

        def raise_one() -> Interrupt:
            """A bench-escalate run; its first step on the worker raises an interrupt."""
            run = services.run_start(domain="bench", blueprint="bench-escalate", input={})
            return wait_for(lambda: Interrupt.objects.filter(run=run).first(), poll=WATCH_POLL)

        # Playwright's event loop owns this thread, where Django's ORM refuses to run: the
        # queries (and, alike, the pushes, as a worker sends them) go through another thread.
        with ThreadPoolExecutor(max_workers=1) as elsewhere:
            bare: dict[str, float] = {}
            for n in range(samples):
                bare[f"bench-ping-{n}"] = elsewhere.submit(ping, f"bench-ping-{n}").result()
                time.sleep(gap)

            events: dict[str, float] = {}
            for _ in range(samples):
                interrupt = elsewhere.submit(raise_one).result()
                events[f"interrupt-{interrupt.pk}"] = interrupt.created_at.timestamp() * 1000
                time.sleep(gap / 2)
                # Then withdrawn (its run cancelled), as decided ones leave: an inbox holds
                # what is pending now, not every escalation of the run. (Chromium's autofill
                # reads every form of a page after each change of it; hundreds of pending
                # decisions are measured apart, docs/BENCHMARKS.md.)
                elsewhere.submit(services.run_cancel, run_id=interrupt.run_id).result()
                time.sleep(gap / 2)
            elsewhere.submit(connections.close_all).result()
        time.sleep(2)  # the last pushes land

        seen = [page.evaluate("window.benchSeen") for page in pages]
        browser.close()
    stop_all()
    missing = sum(element not in s for s in seen for element in [*bare, *events])
    bare_ms = [s[e] - at for s in seen for e, at in bare.items() if e in s]
    event_ms = [s[e] - at for s in seen for e, at in events.items() if e in s]
    return {
        "browsers": browsers,
        "event_ms": percentiles(event_ms),
        "bare_push_ms": percentiles(bare_ms),
        "event_vs_bare_push": round(
            percentiles(event_ms)["median"] / max(percentiles(bare_ms)["median"], 0.01), 2
        ),
        "missed": missing,
    }


def rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    table = []
    for push in results["push"]:
        n, event, bare = push["browsers"], push["event_ms"], push["bare_push_ms"]
        table.append(
            (
                f"worker event → in the DOM, {n} browser{'s' if n > 1 else ''} (ms)",
                f"{event['median']} / {event['p99']}",
                f"median / p99; bare push {bare['median']} / {bare['p99']}, "
                f"{push['event_vs_bare_push']}x; {push['missed']} missed"
                + (" (must p99 ≤ 20, aim ≤ 5)" if n == 1 else ""),
            )
        )
    return table


# Where the focus is among the inbox's items (keys.js moves it with j/k), and where the
# item with the given id is: [focused, target], -1 for none.
WHERE = (
    "(function (id) { var all = Array.prototype.slice.call("
    "document.querySelectorAll('.inbox-item[data-decision]'));"
    " var e = document.activeElement;"
    " var item = e && e.closest ? e.closest('.inbox-item[data-decision]') : null;"
    " return [all.indexOf(item), all.findIndex(function (x) { return x.id === id; })];"
    " })(%r)"
)
MAX_MOVES = 30  # j presses before the bench gives up finding the new item


def keyboard_decisions(base_url: str, samples: int, gap: float = 0.3) -> dict[str, Any]:
    """Escalation appearing → decided by a scripted operator using the keyboard alone, on
    one Chromium page on the inbox (keys.js's journey: j/k move the focus over the items,
    `a` chooses approve, Enter confirms). Each sample: a bench-escalate run raises an
    interrupt on the worker; once its item is in the DOM the script presses j until the
    item holds the focus, then a and Enter, as an operator who reacts at once would. The
    figure runs from the interrupt's created_at to its decided_at (both rows' own clocks,
    one machine): the push, the keys, the POST and the decision's transaction. Beside it,
    its parts: created_at → in the DOM (the push) and in the DOM → decided_at. The run is
    cancelled once decided (its next iteration would raise another)."""
    from django.conf import settings
    from django.db import connections
    from playwright.sync_api import sync_playwright

    from bench.common import admin_user, percentiles, session_key, stop_all, wait_for
    from loops import services
    from oversight.models import Interrupt

    stop_all()  # nothing pending from the parts before: the inbox starts empty
    cookie = session_key(admin_user())
    total, appear, react, keys, undecided = [], [], [], [], 0
    why: list[dict[str, Any]] = []  # what the page showed when one was not decided
    with sync_playwright() as playwright, ThreadPoolExecutor(max_workers=1) as elsewhere:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context()
        context.add_cookies(
            [{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base_url}]
        )
        context.add_init_script(OBSERVE)
        page = context.new_page()
        page.goto(f"{base_url}/oversight/inbox/")
        page.wait_for_selector("#ws-status[data-state='connected']", state="attached")
        time.sleep(1)

        def raise_one() -> Interrupt:
            run = services.run_start(domain="bench", blueprint="bench-escalate", input={})
            return wait_for(lambda: Interrupt.objects.filter(run=run).first(), poll=WATCH_POLL)

        def decided(pk: int) -> Interrupt | None:
            try:
                return wait_for(
                    lambda: Interrupt.objects.filter(pk=pk, decided_at__isnull=False).first(),
                    timeout=5,
                    poll=WATCH_POLL,
                )
            except RuntimeError:
                return None

        for _ in range(samples):
            interrupt = elsewhere.submit(raise_one).result()
            element = f"interrupt-{interrupt.pk}"
            page.wait_for_selector(f"#{element}", state="attached", timeout=10_000)
            pressed = 0
            while pressed < MAX_MOVES:
                focused, wanted = page.evaluate(WHERE % element)
                if focused == wanted:
                    break
                page.keyboard.press("j" if focused < wanted else "k")
                pressed += 1
            page.keyboard.press("a")
            page.keyboard.press("Enter")
            done = elsewhere.submit(decided, interrupt.pk).result()
            elsewhere.submit(services.run_cancel, run_id=interrupt.run_id).result()
            if done is None or done.decided_at is None:
                undecided += 1
                status = elsewhere.submit(_status, interrupt.pk).result()
                why.append({"status": status, "focus_and_item": page.evaluate(WHERE % element)})
                if undecided >= 3:
                    break  # the journey does not work (yet): say so, do not wait for it
                continue
            created = interrupt.created_at.timestamp() * 1000
            total.append(done.decided_at.timestamp() * 1000 - created)
            if (seen := page.evaluate("window.benchSeen").get(element)) is not None:
                appear.append(seen - created)
                react.append(done.decided_at.timestamp() * 1000 - seen)
            keys.append(pressed + 2)
            time.sleep(gap)
        elsewhere.submit(connections.close_all).result()
        browser.close()
    stop_all()
    return {
        "decided_ms": percentiles(total),
        "appeared_ms": percentiles(appear),
        "in_dom_to_decided_ms": percentiles(react),
        "keystrokes": percentiles([float(k) for k in keys]),
        "undecided": undecided,
        "undecided_detail": why,
    }


def _status(pk: int) -> str:
    from oversight.models import Interrupt

    return Interrupt.objects.get(pk=pk).status


def keyboard_rows(results: dict[str, Any]) -> list[tuple[str, Any, str]]:
    board = results["keyboard"]
    decided, appeared, react = (
        board["decided_ms"],
        board["appeared_ms"],
        board["in_dom_to_decided_ms"],
    )
    bare = next((p["bare_push_ms"] for p in results.get("push", []) if p["browsers"] == 1), None)
    baseline = f"; bare push {bare['median']} / {bare['p99']}" if bare else ""
    return [
        (
            "escalation appearing → decided, keyboard (ms)",
            f"{decided['median']} / {decided['p99']}",
            f"median / p99 of {decided['samples']}; in the DOM {appeared['median']} / "
            f"{appeared['p99']}, then keys → decided {react['median']} / {react['p99']}"
            f"{baseline}; {board['keystrokes']['median']} keys; {board['undecided']} undecided",
        )
    ]
