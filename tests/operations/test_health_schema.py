"""`ogv health` on a database that answers but lacks this code's schema: not healthy,
said in one line, and nothing else is tried on it (no raw database error beside it)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import make_url

from models.migrate import upgrade
from tests.support.services import POSTGRES_URL
from tests.support.stacks import ogv_command

UNHEALTHY = 3
NOT_CHECKED = "not checked: the database and broker must work"


def health(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    clean.update(OGV_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [*ogv_command(), "health", "--timeout", "3", *args],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def database_check(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert done.returncode == UNHEALTHY, done.stdout + done.stderr
    report = json.loads(done.stdout)
    checks = report["checks"]
    assert checks["broker"]["healthy"] is True
    assert checks["worker"]["message"] == NOT_CHECKED
    assert report["error"]["message"].startswith(f"database: {checks['database']['message']}")
    assert "Error" not in done.stdout  # no ProgrammingError, OperationalError...
    database: dict[str, Any] = checks["database"]
    assert database["healthy"] is False
    return database


def test_an_unmigrated_embedded_database_is_not_healthy(tmp_path: Path) -> None:
    done = health(tmp_path, "--json")

    assert database_check(done)["message"] == (
        "it answers, but the database has no schema yet: run `ogv db upgrade`"
    )


def test_the_text_report_says_it_in_one_line(tmp_path: Path) -> None:
    done = health(tmp_path, COLUMNS="200")  # the table's width; each row fits on a line

    assert done.returncode == UNHEALTHY
    [row] = [line for line in done.stdout.splitlines() if line.startswith("│ database ")]
    assert [cell.strip() for cell in row.strip("│").split("│")] == [
        "database",
        "unhealthy",
        row.split("│")[3].strip(),
        "it answers, but the database has no schema yet: run `ogv db upgrade`",
    ]
    assert "Error" not in done.stdout + done.stderr


def test_a_schema_behind_the_code_is_not_healthy(tmp_path: Path, fernet_key: str) -> None:
    path = tmp_path / "old.sqlite3"
    upgrade(f"sqlite:///{path}", "0004")
    done = health(
        tmp_path,
        "--json",
        OGV_DATABASE_URL=f"sqlite:///{path}",
        OGV_BROKER_URL="embedded",
        OGV_ENCRYPTION_KEYS=fernet_key,
    )

    message = database_check(done)["message"]
    assert message.startswith("it answers, but the schema is at revision 0004, behind ")
    assert message.endswith(": run `ogv db upgrade`")


@pytest.fixture
def empty_postgres() -> Iterator[str]:
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    name = f"ogv_empty_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_an_unmigrated_postgres_database_is_not_healthy(
    tmp_path: Path, empty_postgres: str, fernet_key: str
) -> None:
    done = health(
        tmp_path,
        "--json",
        OGV_DATABASE_URL=empty_postgres,
        OGV_BROKER_URL="embedded",
        OGV_ENCRYPTION_KEYS=fernet_key,
    )

    assert database_check(done)["message"] == (
        "it answers, but the database has no schema yet: run `ogv db upgrade`"
    )
