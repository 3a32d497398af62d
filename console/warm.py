"""What a worker process would otherwise do on its first push, done when it starts.

Django compiles a template on its first use in a process (the cached loader keeps it from
then on) and builds the URL resolver's reverse tables on the first `{% url %}`; the first
push opens the push loop's thread and its Redis connections (common.push.connect). A pushed
fragment is rendered by whichever worker process took the step, so without this the first
escalation each process pushed after a start reached the inbox 20 to 30 ms later (measured:
bench.push, DESIGN.md section 6).

Then what the process holds from its start (Django, the models, the compiled templates: some
160,000 objects) is moved out of the garbage collector's sight (`gc.freeze`): a full
collection walks every tracked object, and over those it took 115 ms on this machine, a
pause that fell on whatever push was under way. They live as long as the process anyway.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from django.template import engines
from django.urls import get_resolver

from common import push

logger = logging.getLogger(__name__)

# The pushed fragments (and what they include) are the partials: `_<name>.html`.
FRAGMENTS = "_*.html"


def fragment_names() -> list[str]:
    """Every partial under the project's templates directories, as get_template names it."""
    names = []
    for directory in map(Path, engines["django"].dirs):
        names += [str(path.relative_to(directory)) for path in directory.rglob(FRAGMENTS)]
    return sorted(names)


def warm() -> None:
    engine = engines["django"]
    for name in fragment_names():
        engine.get_template(name)
    get_resolver().reverse_dict  # noqa: B018  (populates the resolver's reverse tables)
    try:
        push.connect()
    except Exception as exc:  # Redis down: the first push connects, or fails, as before
        logger.warning("pushes could not connect ahead: %s", exc)
    settle()


def settle() -> None:
    """The objects made so far stay for the process's life: no collection walks them again."""
    gc.collect()  # what is garbage already goes now, not frozen with the rest
    gc.freeze()
