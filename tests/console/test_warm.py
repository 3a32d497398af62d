"""A worker process compiles the pushed fragments when it starts (console.warm), so the first
escalation it pushes does not wait for the template compiler."""

from __future__ import annotations

import gc

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


def test_warm_leaves_what_the_process_loaded_out_of_the_collectors_sight():
    gc.unfreeze()
    try:
        warm()
        # Django, the models and the compiled fragments: no collection walks them any more.
        loader = engines["django"].engine.template_loaders[0]  # type: ignore[attr-defined]
        card = loader.get_template_cache["oversight/_inbox_item.html"]
        walked = (o for g in range(3) for o in gc.get_objects(generation=g))
        assert all(o is not card for o in walked)
        assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()  # this process is the test runner: it goes on as it was
