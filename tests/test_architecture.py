"""Imports point down: no module of worker/ or models/ imports one from a higher floor.

`FLOORS` is the one statement of the layers (docs/ARCHITECTURE.md describes them).
Every import counts: at module level, inside a function, and under TYPE_CHECKING,
since a lazy import that reaches up is still a dependency that reaches up.
Modules on one floor may import each other. `worker.testing` is a side room: it may
import anything below the operators' tools, and only those tools (the demo and the
fake server's commands) may import it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FLOORS: list[tuple[str, ...]] = [
    ("models",),
    (
        "worker.errors",
        "worker.settings",
        "worker.logs",
        "worker.tracing",
        "worker.platforms",
        "worker.broker",
        "worker.embedded_broker",
        "worker.cursors",
        "worker.webhooks",
    ),
    ("worker.metrics", "worker.coordination", "worker.readiness"),
    (
        "worker.checks",
        "worker.inventory",
        "worker.key_holders",
        "worker.audit",
        "worker.access",
    ),
    ("worker.enqueue",),
    ("worker.periodic", "worker.tasks", "worker.celery", "worker.web", "worker.client"),
    ("worker.operations",),
]
"""The floors, lowest first; a module's floor is that of its longest matching name."""

SIDE_ROOM = "worker.testing"
SIDE_ROOM_USERS = ("worker.operations.demo", "worker.operations.cli")
"""The only modules that may import the side room (a package's submodules count too)."""

PACKAGE_ROOTS = {"worker": "worker", "models": "models"}

PENDING: dict[tuple[str, str], str] = {
    ("models.db", "worker.settings.get_settings"): (
        "session_factory() with no URL opens the configured database; its callers "
        "(operations/cli.py among them) must name it first"
    ),
}
"""Imports known to point up, each with what must happen before it goes. An entry
that no longer matches an import fails the test, so the list only shrinks."""


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def floor_of(name: str) -> int | None:
    """The floor of a dotted name (a module, or a name imported from one), or None."""
    best: tuple[int, int] | None = None
    for floor, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if _within(name, prefix) and (best is None or len(prefix) > best[1]):
                best = (floor, len(prefix))
    return None if best is None else best[0]


def modules() -> list[tuple[str, Path]]:
    """Every module of worker/ and models/ except migrations (they import models only)."""
    found = []
    for root in PACKAGE_ROOTS.values():
        for path in sorted((ROOT / root).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found.append((".".join(parts), path))
    return found


def imports_of(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Each name this module imports from worker/ or models/, with its line: for
    `from a.b import c`, `a.b.c` (c may be a module or a name in a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in sorted(ast.walk(tree), key=lambda node: getattr(node, "lineno", 0)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGE_ROOTS:
                yield name, node.lineno


def offences(module: str, path: Path) -> Iterator[str]:
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if module in PACKAGE_ROOTS:
        floor = 0  # `worker` itself holds a docstring: importing it stays cheap
    elif _within(module, SIDE_ROOM):
        floor = len(FLOORS) - 1  # below the operators' tools, like a floor under them
    else:
        found = floor_of(module)
        if found is None:
            yield f"{where}: {module} has no floor in FLOORS"
            return
        floor = found
    for name, line in imports_of(module, path):
        if (module, name) in PENDING:
            continue
        if _within(name, SIDE_ROOM):
            if not _within(module, SIDE_ROOM) and not any(
                _within(module, user) for user in SIDE_ROOM_USERS
            ):
                yield f"{where}:{line}: imports {name} (the test-support side room)"
            continue
        target = floor_of(name)
        if target is None:
            yield f"{where}:{line}: imports {name}, which has no floor in FLOORS"
        elif target > floor:
            yield (
                f"{where}:{line}: imports {name} (floor {target}, {FLOORS[target][0]}...) "
                f"from floor {floor} ({FLOORS[floor][0]}...)"
            )


@pytest.mark.parametrize(("module", "path"), modules(), ids=[m for m, _ in modules()])
def test_imports_point_down(module: str, path: Path) -> None:
    assert list(offences(module, path)) == []


def test_every_pending_exception_still_exists() -> None:
    found = {(module, name) for module, path in modules() for name, _ in imports_of(module, path)}
    assert set(PENDING) <= found


def test_the_rule_catches_an_import_that_points_up(tmp_path: Path) -> None:
    """The check itself: imports up, lazy or not, and into the side room are named."""
    source = tmp_path / "held.py"
    source.write_text(
        "from worker.checks import guard\n"
        "from models import Team\n"
        "def f():\n"
        "    from worker.web import teams\n"
        "    from worker.testing.scenario import Scenario\n"
        "import worker.operations.cli\n"
    )
    found = list(offences("worker.checks.held", source))
    assert [line.split(": ", 1)[1].split(" (")[0] for line in found] == [
        "imports worker.web.teams",
        "imports worker.testing.scenario.Scenario",
        "imports worker.operations.cli",
    ]


def test_every_floor_names_something_that_exists() -> None:
    names = {module for module, _ in modules()}
    for prefixes in FLOORS:
        for prefix in prefixes:
            assert any(_within(name, prefix) for name in names), prefix
