"""A worker process compiles the pushed fragments when it starts (console.warm), so the first
escalation it pushes does not wait for the template compiler."""

from __future__ import annotations

from django.template import engines

from console.warm import fragment_names, warm


def test_warm_compiles_every_pushed_fragment():
    names = fragment_names()
    loader = engines["django"].engine.template_loaders[0]  # type: ignore[attr-defined]
    loader.reset()  # as a new process starts: nothing compiled

    warm()

    assert "oversight/_inbox_item.html" in names  # the escalation's card, pushed to inboxes
    assert "console/_pending.html" in names  # every page's header count
    assert set(names) <= set(loader.get_template_cache)  # compiled, kept by the cached loader
