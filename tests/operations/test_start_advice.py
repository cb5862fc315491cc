"""Refused at start, in one line, with what to do: settings, a missing database, a schema.

Each case runs the real `ogv` (or worker) in a fresh process, as an operator would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import make_url

from tests.support.stacks import ogv_command

NOT_A_KEY = "this-is-not-a-fernet-key-but-it-is-long-enough"


def environment(tmp_path: Path, **env: str) -> dict[str, str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    clean.update(OGV_DATA_DIR=str(tmp_path / "data"), **env)
    return clean


def ogv(
    tmp_path: Path, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ogv_command(), *args],
        env=environment(tmp_path, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def only_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    [line] = done.stderr.splitlines()
    return line


BAD_KEY_LINE = (
    "error (invalid_setting): OGV_ENCRYPTION_KEYS: entry 2 of 2 is not a Fernet key "
    "(32 bytes, URL-safe base64); make one with `ogv keys generate`"
)


def test_a_malformed_encryption_key_stops_team_add_in_one_line(tmp_path: Path) -> None:
    keys = f"{Fernet.generate_key().decode()},{NOT_A_KEY}"

    done = ogv(
        tmp_path,
        "team",
        "add",
        "--org",
        "1",
        "--integration",
        "1",
        "--label",
        "ops",
        stdin="some-integration-key\n",
        OGV_ENCRYPTION_KEYS=keys,
    )

    assert only_line(done) == BAD_KEY_LINE
    assert NOT_A_KEY not in done.stdout + done.stderr


def test_a_worker_with_a_malformed_encryption_key_never_says_ready(tmp_path: Path) -> None:
    keys = f"{Fernet.generate_key().decode()},{NOT_A_KEY}"
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", "worker", "--pool", "solo"],
        env=environment(tmp_path, OGV_ENCRYPTION_KEYS=keys),
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ogv: invalid settings: " + BAD_KEY_LINE.removeprefix("error (invalid_setting): ")
    )
    assert "ready" not in done.stdout + done.stderr
    assert NOT_A_KEY not in done.stdout + done.stderr


def test_a_missing_postgres_database_names_createdb_even_from_db_upgrade(
    tmp_path: Path, postgres_url: str, fernet_key: str
) -> None:
    name = f"ogv_missing_{uuid.uuid4().hex[:8]}"
    missing = str(make_url(postgres_url).set(database=name).render_as_string(False))
    env = {
        "OGV_DATABASE_URL": missing,
        "OGV_BROKER_URL": "embedded",
        "OGV_ENCRYPTION_KEYS": fernet_key,
    }
    expected = (
        f'error (database_missing): the database "{name}" does not exist; '
        f"create it (`createdb {name}`), or correct OGV_DATABASE_URL"
    )

    for command in (["db", "upgrade"], ["status"], ["keys", "rotate"]):
        assert only_line(ogv(tmp_path, *command, **env)) == expected, command


def test_a_missing_sqlite_folder_is_named_and_not_created(tmp_path: Path, fernet_key: str) -> None:
    folder = tmp_path / "no-such-folder"
    env = {
        "OGV_DATABASE_URL": f"sqlite:///{folder / 'ogv.sqlite3'}",
        "OGV_BROKER_URL": "embedded",
        "OGV_ENCRYPTION_KEYS": fernet_key,
    }
    expected = (
        f"error (database_missing): the folder {folder} of the SQLite database does not "
        f"exist; create it (`mkdir -p {folder}`), or correct OGV_DATABASE_URL"
    )

    for command in (["db", "upgrade"], ["status"]):
        assert only_line(ogv(tmp_path, *command, **env)) == expected, command
    assert not folder.exists()


def test_a_missing_sqlite_file_is_named_and_db_upgrade_creates_it(
    tmp_path: Path, fernet_key: str
) -> None:
    path = tmp_path / "ogv.sqlite3"
    env = {
        "OGV_DATABASE_URL": f"sqlite:///{path}",
        "OGV_BROKER_URL": "embedded",
        "OGV_ENCRYPTION_KEYS": fernet_key,
    }

    assert only_line(ogv(tmp_path, "status", **env)) == (
        f"error (database_missing): the SQLite database {path} does not exist; correct "
        "OGV_DATABASE_URL, or create the database there with `ogv db upgrade`"
    )
    assert not path.exists()
    assert ogv(tmp_path, "db", "upgrade", **env).returncode == 0
    assert ogv(tmp_path, "status", **env).returncode == 0
