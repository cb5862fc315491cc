"""The Alembic migrations build the schema the models describe, on both databases."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from models import Base
from models.migrate import downgrade, upgrade

TABLES = {
    "alembic_version",
    "integrations",
    "organization_integrations",
    "teams",
    "team_status_changes",
    "validation_requests",
    "validation_runs",
    "health_checks",
}


def test_sqlite_from_empty_to_head_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    upgrade(url)
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == TABLES
    downgrade(url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite_url", "postgres_url"])
def test_migrated_schema_matches_the_models(request: pytest.FixtureRequest, backend: str) -> None:
    url = request.getfixturevalue(backend)
    engine = create_engine(url)
    with engine.connect() as connection:
        diff = compare_metadata(
            MigrationContext.configure(connection, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert diff == []


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / f'{uuid.uuid4().hex}.sqlite3'}"
    upgrade(url)
    upgrade(url)
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == TABLES
    engine.dispose()


def test_postgres_team_pages_keep_room_for_status_writes(postgres_url: str) -> None:
    # A check rewrites a team's status columns; with room on the page the new row
    # version stays there and no index gets a new entry (a HOT update).
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        options = connection.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE relname = 'teams'"
        ).scalar_one()
    engine.dispose()
    assert options == ["fillfactor=90"]
