"""The project's modules import one way (STYLE.md B.2, issue 14), from the bottom up:

1. `common`: what every app needs (environment, signing, pushes, the Redis client, logs,
   pagination, request types, refusals, backoff); it imports no app;
2. `loops.models`, then `oversight.models` and `realms.models` (which import no app's models:
   loops may queue a realm's message without importing what lies above);
3. leaf helpers (the trace, `oversight.audit`, `oversight.gates`, the halt scope's reads;
   `realms.outbox`, `realms.grants`, `realms.frames`, which the loops services and the
   engine use: a remote frame's call, a status pushed back);
4. services, which send tasks by name and never import a tasks module;
5. the engine, imported only by `loops.tasks`;
6. tasks, views, the API, consumers;
7. `console`'s wiring (settings, urls, asgi, the Celery app) on top.

The graph is read from the source (AST), imports inside function bodies included: a late
import that closes a circle hides the layering instead of fixing it."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "console", "loops", "oversight", "realms", "demo", "bench")
BUDGET = 400  # lines a module may have (STYLE.md B.2)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The project modules `name` imports, anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # `from loops import services` names a module; `from loops.models import X` not.
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in MODULES else base)
    resolved = set()
    for target in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _importers(prefix: str) -> set[str]:
    return {
        name
        for name, targets in GRAPH.items()
        if any(t == prefix or t.startswith(prefix + ".") for t in targets)
    }


def test_it_finds_no_import_cycle():
    try:
        graphlib.TopologicalSorter(GRAPH).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        pytest.fail(f"import cycle: {' → '.join(cycle)}")


def test_the_leaf_package_imports_no_app():
    outside = {
        name: sorted(t for t in targets if not t.startswith("common"))
        for name, targets in GRAPH.items()
        if name.startswith("common")
    }
    assert {name: found for name, found in outside.items() if found} == {}


def _below(package: str, allowed: tuple[str, ...]) -> dict[str, list[str]]:
    """What the modules of `package` import besides `common` and the `allowed` packages."""
    return {
        name: found
        for name, targets in GRAPH.items()
        if name == package or name.startswith(package + ".")
        if (found := sorted(t for t in targets if not t.startswith(("common", *allowed))))
    }


def test_models_import_only_what_lies_below_them():
    assert _below("loops.models", ("loops.models",)) == {}
    assert _below("oversight.models", ("loops.models", "oversight.models")) == {}
    assert _below("realms.models", ("realms.models",)) == {}


def test_loops_use_only_the_realms_leaves():
    """loops lies below realms: of it, only the leaves that touch nothing but models."""
    leaves = {"realms.frames", "realms.outbox", "realms.grants", "realms.models"}
    leaves |= {"realms.identity", "realms.cards", "realms.tasks_names", "realms.wire"}
    used = {t for name, targets in GRAPH.items() if name.startswith("loops") for t in targets}
    assert {t for t in used if t.startswith("realms")} <= leaves
    for leaf in leaves:
        assert not any(t.startswith("realms.services") for t in GRAPH[leaf]), leaf


def test_only_the_tasks_import_the_engine():
    importers = {n for n in _importers("loops.engine") if not n.startswith("loops.engine")}
    assert importers == {"loops.tasks"}


def test_services_send_tasks_by_name():
    services = [n for n in MODULES if ".services" in n or n.endswith("services")]
    assert services, "no services modules found"
    assert {name: sorted(t for t in GRAPH[name] if t.endswith(".tasks")) for name in services} == {
        name: [] for name in services
    }


def test_every_module_stays_under_the_line_budget():
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()
    }
    assert {name: n for name, n in sizes.items() if n > BUDGET} == {}
