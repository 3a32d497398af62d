"""Find the stacks (issue 17): from any frame its root, parent and children are links; the
run page numbers its iterations one way; the icicle's labels stay readable."""

from __future__ import annotations

import json
import re
from html import unescape

import pytest

from loops import engine
from loops.models import Iteration
from tests.loops.test_stack_views import start_lab, step_until_micro

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("declared")]


def _frame_links(html: str) -> str:
    return html.split('class="frame-links"')[1].split("</dl>")[0]


def test_it_links_a_frame_to_its_root_parent_and_children(client, viewer):
    main = start_lab()
    frames = step_until_micro(main)
    sub = next(f for f in frames if f.depth == 1)
    micro = next(f for f in frames if f.depth == 2)

    links = _frame_links(client.get(f"/loops/runs/{micro.pk}/").content.decode())
    assert (
        f'<dt>Root</dt>\n    <dd><a href="/loops/runs/{main.pk}/">lab-main #{main.pk}</a>' in links
    )
    assert (
        f'<dt>Parent</dt>\n    <dd><a href="/loops/runs/{sub.pk}/">lab-sub #{sub.pk}</a>' in links
    )
    assert 'href="/loops/domains/lab/"' in links  # the domain's live stack

    html = client.get(f"/loops/runs/{main.pk}/").content.decode()
    links = _frame_links(html)
    assert "this run (the main loop)" in links and "<dd>none</dd>" in links  # no parent
    assert '<a href="#children">1 below</a>' in links
    assert (
        f'<a href="/loops/runs/{sub.pk}/">lab-sub #{sub.pk}</a>' in html.split('id="children"')[1]
    )


def test_it_numbers_each_iteration_by_its_own_number(client, viewer):
    main = start_lab()
    for _ in range(3):
        engine.advance(run_id=main.pk)
    numbers = list(Iteration.objects.filter(run=main).values_list("number", flat=True))
    assert numbers

    html = client.get(f"/loops/runs/{main.pk}/").content.decode()

    for number in numbers:  # the list item's number is the one its heading shows
        assert re.search(rf'value="{number}" class="iteration[^>]*>\s*<h3>#{number} ', html)


def test_it_draws_readable_icicle_labels_with_hover_details(client, viewer):
    main = start_lab()
    frames = step_until_micro(main)

    html = client.get("/loops/domains/lab/").content.decode()

    found = re.search(r'id="domain-lab-icicle" data-figure="([^"]*)"', html)
    assert found is not None
    figure = json.loads(unescape(found.group(1)))
    (icicle,) = figure["data"]
    assert figure["layout"]["uniformtext"] == {"minsize": 12, "mode": "hide"}
    assert icicle["insidetextfont"]["size"] >= 12 and icicle["textinfo"] == "text"
    assert figure["layout"]["paper_bgcolor"] == "rgba(0,0,0,0)"  # the page's theme shows
    for frame, hover in zip(frames, icicle["hovertext"], strict=False):
        assert f"#{frame.pk}" in hover
