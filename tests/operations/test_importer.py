"""`ogv team import`: all or nothing, every refused line reported, in linear time."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select
from typer.testing import CliRunner

from models import Team
from models.crypto import KeyVault
from models.db import session_factory
from tests.support.pipeline import add_teams
from worker.operations.cli import app
from worker.operations.importer import import_teams
from worker.settings import Settings, get_settings
from worker.testing.fake_opsgenie import FakeOpsgenie


def _setup(settings: Settings, fake: FakeOpsgenie) -> tuple[int, int, dict[str, Any]]:
    org, team_ids, _ = add_teams(settings, fake, accounts=1, per_account=1)
    integration = _integration_of(settings, team_ids[0])
    good = {"organization_id": org, "integration_id": integration, "integration_key": "k-1234"}
    return org, integration, good


def _integration_of(settings: Settings, team_id: str) -> int:
    from models import OrganizationIntegration

    with session_factory(settings.effective_database_url)() as session:
        link = session.get(OrganizationIntegration, int(team_id.split("-")[0]))
        assert link is not None
        return link.integration_id


def _teams(settings: Settings, org_link_prefix: str) -> set[str]:
    with session_factory(settings.effective_database_url)() as session:
        return set(session.scalars(select(Team.label).where(Team.id.startswith(org_link_prefix))))


def _lines(*items: Any) -> list[bytes]:
    return [item if isinstance(item, bytes) else json.dumps(item).encode() for item in items]


def test_one_refused_line_writes_nothing_and_every_bad_line_is_named(
    settings: Settings, fake: FakeOpsgenie
) -> None:
    org, _, good = _setup(settings, fake)
    secret = f"import-{uuid.uuid4()}"
    lines = _lines(
        good | {"label": "alpha", "integration_key": secret},
        good | {"label": "big-org", "organization_id": 2**63},
        good | {"label": "big-integration", "integration_id": 2**31},
        good | {"label": "zero", "organization_id": 0},
        b'{"label": "caf\xe9 latin-1"}',
        good | {"label": "beta"},
        b"",
        good | {"label": "alpha"},  # the file repeats a label
    )

    report = import_teams(
        session_factory(settings.effective_database_url),
        lines,
        KeyVault(settings.fernet_keys()),
        batch_size=2,
    )

    assert (report.imported, report.written, report.lines) == (0, False, 8)
    assert [(e.line, e.code) for e in report.errors] == [
        (2, "invalid"),
        (3, "invalid"),
        (4, "invalid"),
        (5, "invalid_encoding"),
        (8, "duplicate_team"),
    ]
    assert report.errors[0].message == (f"organization_id must be an integer from 1 to {2**63 - 1}")
    assert _teams(settings, f"{_link(settings, org)}-") == {"team-00000"}  # nothing new
    assert secret not in repr(report)


def _link(settings: Settings, org: int) -> int:
    from models import OrganizationIntegration

    with session_factory(settings.effective_database_url)() as session:
        link_id = session.scalar(
            select(OrganizationIntegration.id).where(OrganizationIntegration.organization_id == org)
        )
        assert link_id is not None
        return link_id


def test_skip_invalid_writes_the_good_lines(settings: Settings, fake: FakeOpsgenie) -> None:
    org, _, good = _setup(settings, fake)
    lines = _lines(
        good | {"label": "alpha"},
        good | {"label": "team-00000"},  # taken before the import
        good | {"label": "gamma", "organization_id": -1},
        good | {"label": "beta"},
    )

    report = import_teams(
        session_factory(settings.effective_database_url),
        lines,
        KeyVault(settings.fernet_keys()),
        skip_invalid=True,
    )

    assert (report.imported, report.written) == (2, True)
    assert [(e.line, e.code) for e in report.errors] == [(2, "duplicate_team"), (3, "invalid")]
    assert _teams(settings, f"{_link(settings, org)}-") == {"team-00000", "alpha", "beta"}


def test_the_statements_per_chunk_do_not_grow_with_the_table(
    settings: Settings, fake: FakeOpsgenie
) -> None:
    """Linear time: each chunk is one INSERT (and a link look-up for new pairs only)."""
    _, _, good = _setup(settings, fake)
    sessions = session_factory(settings.effective_database_url)
    engine = sessions.kw["bind"]
    assert isinstance(engine, Engine)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", count)
    try:
        lines = _lines(*(good | {"label": f"bulk-{n:04d}"} for n in range(1000)))
        report = import_teams(sessions, lines, KeyVault(settings.fernet_keys()), batch_size=250)
    finally:
        event.remove(engine, "before_cursor_execute", count)

    assert (report.imported, report.errors) == (1000, [])
    # One SELECT of the link, then one INSERT per chunk (the driver may split an
    # INSERT into pages of rows, never into one statement per row).
    assert statements.count("SELECT") == 1
    assert 4 <= statements.count("INSERT") <= 8
    with sessions() as session:
        assert session.scalar(select(func.count()).where(Team.label.startswith("bulk-"))) >= 1000


def test_the_cli_says_what_was_written_and_refuses_a_missing_file(
    ogv_env: dict[str, str], tmp_path: Path
) -> None:
    runner = CliRunner()
    get_settings.cache_clear()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    source = tmp_path / "teams.jsonl"
    source.write_bytes(b'{"organization_id": 1}\n\xff\xfe\n')

    refused = runner.invoke(app, ["team", "import", str(source)])
    missing = runner.invoke(app, ["team", "import", str(tmp_path / "nope.jsonl"), "--json"])

    assert refused.exit_code == 1
    assert refused.stdout.splitlines() == [
        "nothing imported: 2 of 2 lines refused (fix them, or give --skip-invalid to import "
        "the rest)",
        "  line 1: malformed_line: expected organization_id and integration_id (integers), "
        "label and integration_key (strings)",
        "  line 2: invalid_encoding: the line is not UTF-8",
    ]
    assert missing.exit_code == 1
    error = json.loads(missing.stdout)["error"]
    assert error["code"] == "not_found" and "nope.jsonl" in error["message"]
    assert "Traceback" not in refused.output + missing.output


@pytest.mark.parametrize("lines", [[b""], []])
def test_an_empty_file_imports_nothing_and_refuses_nothing(
    settings: Settings, lines: list[bytes]
) -> None:
    report = import_teams(
        session_factory(settings.effective_database_url), lines, KeyVault(settings.fernet_keys())
    )

    assert (report.imported, report.errors, report.written) == (0, [], True)
