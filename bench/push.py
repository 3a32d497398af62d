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
            html = f'<div hx-swap-oob="beforeend:#inbox-decided"><p id="{element}">ping</p></div>'
            push_html(CONSOLE_GROUP, html)
            return sent

        def raise_one() -> Interrupt:
            """A bench-escalate run; its first step on the worker raises an interrupt."""
            run = services.run_start(domain="bench", blueprint="bench-escalate", input={})
            return wait_for(lambda: Interrupt.objects.filter(run=run).first())

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
                time.sleep(gap)
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
