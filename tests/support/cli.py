"""The `ogv` command line in-process (typer's runner), on the test's environment."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from worker.operations.cli import app
from worker.settings import OFFICIAL_BASE_URLS, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie

runner = CliRunner()


def prepare_cli(monkeypatch: pytest.MonkeyPatch, fake: FakeOpsgenie) -> None:
    """Allow the fake and migrate the database of a clean OGV_* environment (`ogv_env`):
    the `cli_env` fixture."""
    monkeypatch.setenv("OGV_ALLOWED_BASE_URLS", ",".join([*OFFICIAL_BASE_URLS, fake.url]))
    get_settings.cache_clear()
    assert runner.invoke(app, ["db", "upgrade", "--json"]).exit_code == 0


def call(*args: str, stdin: str | None = None) -> tuple[int, Any]:
    result = runner.invoke(app, [*args, "--json"], input=stdin)
    return result.exit_code, json.loads(result.stdout) if result.stdout.strip() else None
