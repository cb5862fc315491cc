"""`ogv` starts without the service's heavy libraries: which modules a command loads.

Not a timing test (the machine is shared and noisy; bench/startup.py measures the
time). Each case runs the real CLI in a fresh interpreter and lists the top-level
packages it imported: a module-level import of SQLAlchemy, Celery or aiohttp that
creeps back into the CLI's path shows up here as a name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stacks import ogv_command

RUN_OGV = """
import sys
from worker.operations.cli import main
sys.argv = ["ogv", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
"""
IMPORT_CLI = "import worker.operations.cli"
DUMP = """
import json, os, sys
with open(os.environ["OGV_TEST_MODULES_TO"], "w") as out:
    json.dump(sorted(sys.modules), out)
"""

SERVICE = {"sqlalchemy", "alembic", "aiohttp", "celery", "kombu", "redis", "prometheus_client"}
"""The libraries of the service itself: no command's start-up needs them before it runs."""
NOT_FOR_HELP = {
    *SERVICE,
    "pydantic_settings",
    "cryptography",
    "models",
    "worker.settings",
    "worker.checks",
}
"""Not pydantic: typer itself coerces a command's options through pydantic TypeAdapters."""
NOT_FOR_STATUS = {"alembic", "celery", "kombu", "worker.celery", "worker.tasks"}
"""What `ogv status` (settings, SQLAlchemy, the models, one query) never needs."""
STATUS_CHECKS_CHAIN = {"aiohttp", "redis", "prometheus_client", "cryptography"}
"""Loaded by `ogv status` only through worker/checks/platform_health.py, whose module-level
imports of worker.checks.opsgenie, worker.checks.rules and worker.metrics bring them in."""


def environment(tmp_path: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    env["OGV_DATA_DIR"] = str(tmp_path / "data")
    return env


def loaded_by(tmp_path: Path, code: str, *args: str) -> set[str]:
    """The modules, and their top-level packages, that `code` (run with `args`) imported."""
    env = environment(tmp_path) | {"OGV_TEST_MODULES_TO": str(tmp_path / "modules.json")}
    done = subprocess.run(
        [sys.executable, "-c", code + DUMP, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    modules = json.loads((tmp_path / "modules.json").read_text())
    return {*modules, *(name.partition(".")[0] for name in modules)}


def migrated(tmp_path: Path) -> Path:
    command = [*ogv_command(), "db", "upgrade"]
    subprocess.run(command, env=environment(tmp_path), check=True, capture_output=True)
    return tmp_path


def test_importing_the_cli_loads_no_service_library(tmp_path: Path) -> None:
    assert loaded_by(tmp_path, IMPORT_CLI) & NOT_FOR_HELP == set()


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["team", "--help"]])
def test_help_loads_no_service_library(tmp_path: Path, args: list[str]) -> None:
    assert loaded_by(tmp_path, RUN_OGV, *args) & NOT_FOR_HELP == set()


def test_status_loads_no_migrations_and_no_broker(tmp_path: Path) -> None:
    loaded = loaded_by(migrated(tmp_path), RUN_OGV, "status")

    assert {"sqlalchemy", "models", "worker.settings"} <= loaded  # what it does need
    assert loaded & NOT_FOR_STATUS == set()


def test_status_loads_no_http_client_redis_or_metrics(tmp_path: Path) -> None:
    assert loaded_by(migrated(tmp_path), RUN_OGV, "status") & STATUS_CHECKS_CHAIN == set()
