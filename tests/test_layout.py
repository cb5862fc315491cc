"""Where test code lives (tests/support/__init__.py, the README's "Tests"), read from the
sources with `ast`: no test module imports another test module or the conftest, and
only tests/e2e and tests/chaos start long-running processes."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"
APART = (TESTS / "e2e", TESTS / "chaos")
"""The folders whose tests start workers, beat, the API server, Flower or a browser."""
PROCESS_STARTERS = frozenset(
    {"LocalWorker", "Beat", "open_stack", "ApiProcess", "running_flower", "webdriver"}
)
PROCESS_FIXTURES = frozenset({"stack", "watched", "flower", "hooked", "guarded"})


def modules() -> list[Path]:
    return sorted(path for path in TESTS.rglob("*.py") if ".venv" not in path.parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports, absolute names (`from tests.support import x` gives
    tests.support and tests.support.x)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_test_code(name: str) -> bool:
    """A test module or a conftest, by module name."""
    last = name.rsplit(".", 1)[-1]
    return name.startswith("tests.") and (last.startswith("test_") or last == "conftest")


def test_no_module_imports_a_test_module_or_the_conftest() -> None:
    found = {
        str(path.relative_to(TESTS)): sorted(name for name in imported(path) if is_test_code(name))
        for path in modules()
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_support_imports_only_support() -> None:
    found = {
        str(path.relative_to(TESTS)): sorted(
            name
            for name in imported(path)
            if name.startswith("tests.") and not name.startswith("tests.support")
        )
        for path in SUPPORT.glob("*.py")
    }
    assert {path: names for path, names in found.items() if names} == {}


def starts_processes(path: Path) -> set[str]:
    """The process-starting helpers and fixtures a test module names."""
    seen: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name) and node.id in PROCESS_STARTERS:
            seen.add(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in PROCESS_STARTERS:
            seen.add(node.attr)
        elif isinstance(node, ast.alias) and node.name.rsplit(".", 1)[-1] in PROCESS_STARTERS:
            seen.add(node.name)
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            seen.update(arg.arg for arg in node.args.args if arg.arg in PROCESS_FIXTURES)
    return seen


def test_tests_that_start_processes_sit_in_e2e_or_chaos() -> None:
    in_process = [
        path
        for path in modules()
        if path.name.startswith("test_") and not any(path.is_relative_to(d) for d in APART)
    ]
    found = {str(path.relative_to(TESTS)): sorted(starts_processes(path)) for path in in_process}
    assert {path: names for path, names in found.items() if names} == {}


def test_the_checks_see_what_they_look_for() -> None:
    """The rules above would notice: the e2e worker tests name a stack, and a test module
    is recognised as one."""
    assert "stack" in starts_processes(TESTS / "e2e" / "test_worker.py")
    assert is_test_code("tests.e2e.test_worker") and is_test_code("tests.conftest")
    assert not is_test_code("tests.support.stacks")
