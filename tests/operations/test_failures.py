"""Every refusal an operator meets is one line (or `{"error": ...}`), never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.stacks import ogv_command


def run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    clean.update(OGV_DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run(
        [*ogv_command(), *args], env=clean, capture_output=True, text=True, timeout=60
    )


def assert_one_line(done: subprocess.CompletedProcess[str], line: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines() == [line]
    assert "Traceback" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"OGV_MAX_ATTEMPTS": "0"},
            "error (invalid_setting): OGV_MAX_ATTEMPTS: Input should be greater than or equal to 1",
        ),
        (
            {"OGV_FLOWER_BASIC_AUTH": "admin:a"},
            "error (invalid_setting): OGV_FLOWER_BASIC_AUTH: each password needs at least 16 "
            "characters; make one with: python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'",
        ),
    ],
)
def test_a_bad_setting_is_named_in_one_line(tmp_path: Path, env: dict[str, str], line: str) -> None:
    assert_one_line(run(tmp_path, "status", **env), line)


def test_json_refusals_are_an_error_document(tmp_path: Path) -> None:
    done = run(tmp_path, "status", "--json", OGV_MAX_ATTEMPTS="zero")

    assert done.returncode == 1 and done.stderr == ""
    assert json.loads(done.stdout) == {
        "error": {
            "code": "invalid_setting",
            "message": "OGV_MAX_ATTEMPTS: Input should be a valid integer, unable to parse "
            "string as an integer",
        }
    }


def test_a_database_without_its_schema_points_to_db_upgrade(tmp_path: Path) -> None:
    done = run(tmp_path, "status", "--json")

    assert done.returncode == 1
    assert json.loads(done.stdout) == {
        "error": {
            "code": "not_migrated",
            "message": "the database has no schema yet",
            "hint": "run `ogv db upgrade`",
        }
    }


def test_an_unreachable_database_is_named(tmp_path: Path, fernet_key: str) -> None:
    done = run(
        tmp_path,
        "status",
        OGV_DATABASE_URL="postgresql://postgres@127.0.0.1:1/none",
        OGV_BROKER_URL="redis://127.0.0.1:1/0",
        OGV_ENCRYPTION_KEYS=fernet_key,
    )

    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error (database_unavailable): the database is unreachable (")
    assert line.endswith("; check OGV_DATABASE_URL")


def test_an_unreachable_shared_redis_is_named(tmp_path: Path) -> None:
    """The embedded default with OGV_REDIS_URL on a closed port: the guard's windows
    live there, so reading them is refused in one line naming that setting."""
    assert run(tmp_path, "db", "upgrade").returncode == 0
    for command in (["status"], ["changes", "list"]):
        done = run(tmp_path, *command, OGV_REDIS_URL="redis://127.0.0.1:1/0")

        assert done.returncode == 1 and "Traceback" not in done.stderr
        [line] = done.stderr.splitlines()
        assert line == (
            "error (shared_state_unavailable): the shared Redis is unreachable "
            "(ConnectionError); check OGV_REDIS_URL (or OGV_BROKER_URL when the broker is "
            "that Redis)"
        )


def test_a_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run(tmp_path, "api", "--port", port, "--insecure-local")

    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "error (port_in_use): the port is already in use; pick another with --port"
    )


def test_debug_keeps_the_traceback(tmp_path: Path) -> None:
    done = run(tmp_path, "status", OGV_MAX_ATTEMPTS="0", OGV_LOG_LEVEL="DEBUG")

    assert done.returncode == 1
    assert "Traceback" in done.stderr and "ValidationError" in done.stderr


def test_a_worker_with_a_bad_setting_stops_at_start_in_one_line(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    env.update(OGV_DATA_DIR=str(tmp_path), OGV_BACKOFF_CAP="-1")
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ogv: invalid settings: OGV_BACKOFF_CAP: Input should be greater than 0"
    )
    assert "Traceback" not in done.stderr
