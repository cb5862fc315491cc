"""The status history's retention (OGV_HISTORY_RETENTION_DAYS), on SQLite and PostgreSQL.

Pruning reads the whole table in id order, so each test has a database of its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url

from models import TeamStatus, TeamStatusChange, utcnow
from models.crypto import KeyVault
from models.db import dispose_all, session_factory
from models.migrate import upgrade
from tests.support.services import POSTGRES_URL
from worker import inventory
from worker.periodic.retention import prune_history
from worker.settings import Settings


@pytest.fixture(params=["sqlite", "postgres"])
def own_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated database of this test's own, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'retention.sqlite3'}"
        upgrade(url)
        yield url
        return
    request.getfixturevalue("postgres_url")  # PostgreSQL is there (or the test skips)
    admin = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(False)
    name = f"ogv_retention_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    yield url
    dispose_all()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def a_team(database_url: str, fernet_key: str) -> str:
    org = uuid.uuid4().int % 10**9 + 1
    with session_factory(database_url).begin() as session:
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=f"acct-{org}",
            base_url="https://api.opsgenie.com/",
            allowed_base_urls=["https://api.opsgenie.com/"],
        )
        team = inventory.add_team(
            session,
            organization_id=org,
            integration_id=integration.id,
            label="ops",
            integration_key=f"key-{uuid.uuid4()}",
            vault=KeyVault([fernet_key.encode()]),
        )
        return team.id


def test_rows_older_than_the_retention_go_and_the_rest_stay(
    own_database: str, fernet_key: str
) -> None:
    database_url = own_database
    sessions = session_factory(database_url)
    team = a_team(database_url, fernet_key)
    now = utcnow()
    ages = [400, 380, 366, 364, 30, 0]  # days, in the order the rows were written
    with sessions.begin() as session:
        session.execute(
            insert(TeamStatusChange),
            [
                {
                    "team_id": team,
                    "request_id": uuid.uuid4(),
                    "old_status": TeamStatus.VALID,
                    "new_status": TeamStatus.INVALID_KEY,
                    "changed_at": now - timedelta(days=age),
                }
                for age in ages
            ],
        )

    # Pages of two rows: the three old rows take two pages, the run stops at the first
    # page that is not wholly old.
    assert prune_history(sessions, 365, now=now, page_size=2) == 3

    with sessions() as session:
        left = session.scalars(select(TeamStatusChange.changed_at).order_by(TeamStatusChange.id))
        assert [round((now - at).total_seconds() / 86_400) for at in left] == [364, 30, 0]
    assert prune_history(sessions, 365, now=now, page_size=2) == 0
    assert prune_history(sessions, 0, now=now + timedelta(days=3650)) == 0  # 0 keeps all
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(TeamStatusChange)) == 3


def test_the_retention_defaults_to_a_year_and_beat_prunes_hourly() -> None:
    settings = Settings()
    assert (settings.history_retention_days, settings.prune_interval) == (365, 3600.0)
