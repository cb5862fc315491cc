"""The Alembic migrations build the schema the models describe, on both databases."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, make_url, text

from models import Base
from models.db import dispose_all
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
    "integration_moves",
    "platform_health",
    "held_changes",
    "guard_windows",
    "api_processes",
    "api_tokens",
    "audit_events",
    "sunset_notices",
    "retention_marks",
    "base_url_events",
    "idempotent_creates",
}


def test_sqlite_from_empty_to_head_and_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    upgrade(url)
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) == TABLES
    downgrade(url, "base")
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()


def test_0004_fills_in_each_integrations_platform_from_its_base_url(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    upgrade(url, "0003")
    engine = create_engine(url)
    hosts = {
        "us": "https://api.opsgenie.com/",
        "eu": "https://api.eu.opsgenie.com/",
        "jsm": "https://api.atlassian.com/jsm/ops/integration/",
        "proxy": "https://opsgenie-proxy.example.com/",
    }
    with engine.begin() as connection:
        for account, base_url in hosts.items():
            connection.execute(
                text(
                    "INSERT INTO integrations (provider, account_name, base_url, created_at) "
                    "VALUES ('opsgenie', :account, :base_url, '2026-11-01 00:00:00')"
                ),
                {"account": account, "base_url": base_url},
            )
    upgrade(url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT account_name, platform, probe FROM integrations"))
        platforms = {account: (platform, probe) for account, platform, probe in rows}
    engine.dispose()
    assert platforms == {
        "us": ("opsgenie", None),
        "eu": ("opsgenie-eu", None),
        "jsm": ("jsm-ops", None),
        "proxy": ("opsgenie", None),
    }


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


def test_a_checks_team_write_is_a_hot_update_on_postgres(postgres_url: str) -> None:
    # A check rewrites a team's check columns, which no index covers, and its status,
    # which the console's index (organization_integration_id, status) covers. With
    # room left on the page (fillfactor 90) a check that keeps the status, as nearly
    # every check does, stays on the page and no index gets an entry: a HOT update.
    # A change of status, which is rare, adds an entry to that index.
    engine = create_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE relname = 'teams'"
        ).scalar_one() == ["fillfactor=90"]
        connection.exec_driver_sql(
            "INSERT INTO integrations "
            "(id, organization_id, provider, account_name, base_url, created_at) "
            "VALUES (990001, 990001, 'opsgenie', 'hot', 'https://api.opsgenie.com/', now())"
        )
        connection.exec_driver_sql(
            "INSERT INTO organization_integrations "
            "(id, organization_id, integration_id, status, created_at) "
            "VALUES (990001, 990001, 990001, 'active', now())"
        )
        connection.exec_driver_sql(
            "INSERT INTO teams (id, organization_integration_id, label, encrypted_key, "
            "key_version, status, created_at) "
            "SELECT '990001-hot-' || n, 990001, 'hot-' || n, "
            "convert_to(repeat('k', 120), 'UTF8'), 1, 'valid', now() "
            "FROM generate_series(1, 200) AS n"
        )
        first, second = connection.exec_driver_sql(
            "SELECT id FROM teams WHERE organization_integration_id = 990001 ORDER BY ctid LIMIT 2"
        ).scalars()
        connection.exec_driver_sql(
            "UPDATE teams SET status = 'valid', last_checked_at = now(), "
            "last_http_status = 200 WHERE id = %(id)s",
            {"id": first},
        )
        kept = connection.exec_driver_sql(
            "SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'teams'"
        ).one()
        connection.exec_driver_sql(
            "UPDATE teams SET status = 'invalid_key', status_changed_at = now(), "
            "last_checked_at = now(), last_http_status = 401 WHERE id = %(id)s",
            {"id": second},
        )
        changed = connection.exec_driver_sql(
            "SELECT n_tup_hot_upd, n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'teams'"
        ).one()
        connection.rollback()
    engine.dispose()
    assert (tuple(kept), tuple(changed)) == ((1, 1), (1, 2))


def test_postgres_migrates_down_to_0002_and_back(postgres_url: str) -> None:
    admin = make_url(postgres_url).set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    name = f"ogv_migrations_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        downgrade(url, "0002")
        engine = create_engine(url)
        indexes = {index["name"] for index in inspect(engine).get_indexes("teams")}
        options = _reloptions(engine, "teams")
        engine.dispose()
        assert "ix_teams_organization_integration_id" in indexes and options is None
        upgrade(url)
        engine = create_engine(url)
        indexes = {index["name"] for index in inspect(engine).get_indexes("teams")}
        options = _reloptions(engine, "teams")
        engine.dispose()
        assert "ix_teams_organization_integration_id" not in indexes
        assert options == ["fillfactor=90"]
    finally:
        dispose_all()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reloptions(engine: Engine, table: str) -> list[str] | None:
    with engine.connect() as connection:
        options: list[str] | None = connection.exec_driver_sql(
            "SELECT reloptions FROM pg_class WHERE relname = %(table)s", {"table": table}
        ).scalar_one()
    return options
