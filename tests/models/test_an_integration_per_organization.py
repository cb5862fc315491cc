"""Migration 0011 splits every integration that several organizations shared into a row
per organization, keeping every team, its id, key and history, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Connection, create_engine, make_url, text

from models.db import dispose_all
from models.migrate import downgrade, upgrade

US = "https://api.opsgenie.com/"
EU = "https://api.eu.opsgenie.com/"
WHEN = "2026-11-01 00:00:00"


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str) -> Iterator[str]:
    """A database of this test's own, with no schema yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'split.sqlite3'}"
        return
    admin = make_url(postgres_url).set(drivername="postgresql", database="postgres")
    dsn = admin.render_as_string(hide_password=False)
    name = f"ogv_split_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    dispose_all()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(connection: Connection, sql: str, **params: object) -> None:
    connection.execute(text(sql), params)


def shared_install(connection: Connection) -> None:
    """Schema 0010's data: account `apiacct` installed by organizations 400, 401 and 402
    on one row (with probe `alerts` and a move behind it), `solo` by 500 alone, `gone`
    by nobody; a team under each link, with history, a held change and requests."""
    integrations = [
        (1, "apiacct", EU, "opsgenie-eu", "alerts"),
        (2, "solo", US, "opsgenie", None),
        (3, "gone", US, "opsgenie", None),
    ]
    for iid, account, base_url, platform, probe in integrations:
        run(
            connection,
            "INSERT INTO integrations (id, provider, account_name, base_url, platform, probe, "
            "migrated_on, created_at) "
            "VALUES (:id, 'opsgenie', :account, :base_url, :platform, :probe, '2026-12-01', :when)",
            id=iid, account=account, base_url=base_url, platform=platform, probe=probe, when=WHEN,
        )  # fmt: skip
    run(
        connection,
        "INSERT INTO integration_moves (integration_id, from_platform, to_platform, "
        "from_base_url, to_base_url, teams, teams_ready, forced, moved_at) "
        "VALUES (1, 'opsgenie', 'opsgenie-eu', :us, :eu, 3, 3, false, :when)",
        us=US, eu=EU, when=WHEN,
    )  # fmt: skip
    for link, org, iid in [(10, 400, 1), (11, 401, 1), (12, 402, 1), (13, 500, 2)]:
        run(
            connection,
            "INSERT INTO organization_integrations (id, organization_id, integration_id, "
            "status, created_at) VALUES (:id, :org, :iid, 'active', :when)",
            id=link, org=org, iid=iid, when=WHEN,
        )  # fmt: skip
        team = f"{link}-ops"
        run(
            connection,
            "INSERT INTO teams (id, organization_integration_id, label, encrypted_key, "
            "key_version, status, created_at) "
            "VALUES (:id, :link, 'ops', :key, 3, 'valid', :when)",
            id=team, link=link, key=f"sealed-{link}".encode(), when=WHEN,
        )  # fmt: skip
        run(
            connection,
            "INSERT INTO team_status_changes (team_id, request_id, old_status, new_status, "
            "changed_at, notify_attempts) VALUES (:team, :rid, 'unknown', 'valid', :when, 0)",
            team=team, rid=uuid.uuid4().hex, when=WHEN,
        )  # fmt: skip
        run(
            connection,
            "INSERT INTO validation_requests (id, organization_id, integration_id, team_id, "
            "requested_by, state, attempts, created_at) "
            "VALUES (:rid, :org, :iid, :team, 'cli', 'done', 1, :when)",
            rid=uuid.uuid4().hex, org=org, iid=iid, team=team, when=WHEN,
        )  # fmt: skip
    run(
        connection,
        "INSERT INTO held_changes (team_id, request_id, base_url, account, key_version, "
        "old_status, new_status, held_at) "
        "VALUES ('11-ops', :rid, :eu, 'apiacct', 3, 'valid', 'invalid_key', :when)",
        rid=uuid.uuid4().hex, eu=EU, when=WHEN,
    )  # fmt: skip


def snapshot(connection: Connection) -> dict[str, object]:
    def rows(sql: str) -> list[tuple[object, ...]]:
        return [tuple(row) for row in connection.execute(text(sql))]

    return {
        "teams": rows(
            "SELECT id, organization_integration_id, label, encrypted_key, key_version, status "
            "FROM teams ORDER BY id"
        ),
        "history": rows(
            "SELECT team_id, old_status, new_status FROM team_status_changes ORDER BY team_id"
        ),
        "held": rows("SELECT team_id, base_url, new_status FROM held_changes"),
    }


def test_each_organization_gets_its_own_row_and_keeps_every_team(empty_url: str) -> None:
    upgrade(empty_url, "0010")
    engine = create_engine(empty_url)
    with engine.begin() as connection:
        shared_install(connection)
        before = snapshot(connection)
    upgrade(empty_url)
    with engine.connect() as connection:
        assert snapshot(connection) == before
        links = dict(
            connection.execute(
                text("SELECT organization_id, integration_id FROM organization_integrations")
            ).all()
        )
        integrations = {
            row.id: row
            for row in connection.execute(
                text(
                    "SELECT id, organization_id, account_name, base_url, platform, probe, "
                    "migrated_on FROM integrations"
                )
            )
        }
        moves = connection.execute(
            text("SELECT integration_id, to_platform FROM integration_moves")
        ).all()
        requests = dict(
            connection.execute(
                text("SELECT organization_id, integration_id FROM validation_requests")
            ).all()
        )
    assert links[400] == 1 and links[500] == 2
    assert len({links[400], links[401], links[402]}) == 3
    for org in (400, 401, 402):
        row = integrations[links[org]]
        assert (row.organization_id, row.account_name, row.base_url) == (org, "apiacct", EU)
        assert (row.platform, row.probe) == ("opsgenie-eu", "alerts")
        assert str(row.migrated_on) == "2026-12-01"
    assert (integrations[2].organization_id, integrations[3].organization_id) == (500, 0)
    assert sorted(moves) == sorted((links[o], "opsgenie-eu") for o in (400, 401, 402))
    assert requests == links

    # Two organizations may now hold the same account: each on its own row.
    with engine.begin() as connection:
        run(
            connection,
            "INSERT INTO integrations (organization_id, provider, account_name, base_url, "
            "platform, created_at) VALUES (401, 'opsgenie', 'solo', :us, 'opsgenie', :when)",
            us=US, when=WHEN,
        )  # fmt: skip

    downgrade(empty_url, "0010")
    with engine.connect() as connection:
        assert snapshot(connection) == before
        merged = dict(
            connection.execute(
                text("SELECT organization_id, integration_id FROM organization_integrations")
            ).all()
        )
        count = connection.execute(text("SELECT count(*) FROM integrations")).scalar_one()
    assert merged == {400: 1, 401: 1, 402: 1, 500: 2} and count == 3
    engine.dispose()
