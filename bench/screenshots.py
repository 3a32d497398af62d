"""Take the README's screenshots from a running console (the demo makes it lively).

    ./bin/console                                   # in one terminal; note the admin password
    .venv/bin/python -m bench.screenshots http://127.0.0.1:8000 admin <password>

Writes docs/screenshot-{overview,domain,run,inbox,decision}.png at desktop width, the same
decision in the dark theme (screenshot-decision-dark.png), and the overview and a decision
at a phone's 390 px (screenshot-phone-{overview,decision}.png), with Debian's Chromium
(Playwright cannot download its own browser on an air-gapped machine). With a fourth argument,
`federated`, it takes only docs/screenshot-federated.png: healthcare's live stack with a remote
frame into the pharmacy realm, clicked (run `./bin/console --federated` for it).
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent.parent / "docs"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def main(base: str, username: str, password: str, only: str = "") -> int:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/accounts/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_url(f"{base}/")
        page.wait_for_timeout(2000)  # the websocket connects, pushes arrive
        if only == "federated":
            _federated(page, base)
            browser.close()
            return 0
        shots = {
            "overview": "/",
            "domain": "/loops/domains/healthcare/",
            "inbox": "/oversight/inbox/",
        }
        for name, path in shots.items():
            page.goto(base + path)
            page.wait_for_timeout(2500)  # plotly draws after load
            page.screenshot(path=DOCS / f"screenshot-{name}.png", full_page=False)
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        run = _a_live_main_run(base, cookies.get("sessionid", ""))
        if run is not None:
            page.goto(f"{base}/loops/runs/{run}/")
            page.wait_for_timeout(1500)
            page.screenshot(path=DOCS / "screenshot-run.png", full_page=False)
        _decisions(page, base)
        browser.close()
    return 0


def _decisions(page, base: str) -> None:
    """The most urgent decision (the header's link), at desktop width in both themes, then
    the overview and that decision on a phone."""
    page.goto(f"{base}/")
    page.locator("#pending-decisions a[href*='/oversight/interrupts/']").first.wait_for(
        timeout=180_000
    )
    url = page.locator("#pending-decisions a[href*='/oversight/interrupts/']").first
    decision = base + (url.get_attribute("href") or "")
    for scheme, name in (("light", "decision"), ("dark", "decision-dark")):
        page.emulate_media(color_scheme=scheme)
        page.goto(decision)
        page.wait_for_timeout(1500)
        page.screenshot(path=DOCS / f"screenshot-{name}.png", full_page=False)
    page.emulate_media(color_scheme="light")
    page.set_viewport_size({"width": 390, "height": 844})
    for name, path in (("overview", f"{base}/"), ("decision", decision)):
        page.goto(path)
        page.wait_for_timeout(1500)
        page.screenshot(path=DOCS / f"screenshot-phone-{name}.png", full_page=False)
    page.set_viewport_size({"width": 1400, "height": 900})


def _federated(page, base: str) -> None:
    """Healthcare's live stack with its remote frames into the pharmacy realm, and beneath
    it what the grant lets us see of one that is still at work there (as a click on it
    shows; opened without the click, which would zoom the chart into that one frame)."""
    page.set_viewport_size({"width": 1400, "height": 1500})
    page.goto(f"{base}/loops/domains/healthcare/")
    live = r"^regional-pharmacy: .* #(\d+) · (running|waiting|interrupted|halted|paused)$"
    labels = "document.getElementById('domain-healthcare-icicle').data[0].labels"
    page.wait_for_function(
        f"(re) => {labels}.some((l) => new RegExp(re).test(l))", arg=live, timeout=180_000
    )
    label = page.evaluate(f"(re) => {labels}.find((l) => new RegExp(re).test(l))", live)
    found = re.match(live, label)
    assert found is not None, label
    frame = found.group(1)
    page.evaluate(
        "(url) => htmx.ajax('GET', url, {target: '#domain-healthcare-remote', swap: 'innerHTML'})",
        f"/loops/runs/{frame}/remote",
    )
    page.locator("#domain-healthcare-remote").get_by_text("grant lets").wait_for(timeout=30_000)
    page.wait_for_timeout(1500)
    page.screenshot(path=DOCS / "screenshot-federated.png", full_page=False)


def _a_live_main_run(base: str, session: str) -> int | None:
    request = urllib.request.Request(  # noqa: S310 (our own console)
        f"{base}/api/v1/runs?domain=healthcare&state=waiting",
        headers={"Cookie": f"sessionid={session}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (our console)
        items = json.load(response)["items"]
    mains = [r["id"] for r in items if r["depth"] == 0]
    return mains[0] if mains else None


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
