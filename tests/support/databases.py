"""A migrated database of one test's own, on SQLite or PostgreSQL.

Tests that read a whole table (retention walks it in order) or count the work of
a statement need a database nobody else writes to.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from models.db import dispose_all
from models.migrate import upgrade


@contextlib.contextmanager
def own_database(kind: str, postgres_url: str | None, directory: Path) -> Iterator[str]:
    """Yield the URL of a fresh migrated database (`kind`: sqlite or postgres), and
    drop it afterwards. `postgres_url` is the suite's server, for `postgres`."""
    if kind == "sqlite":
        url = f"sqlite:///{directory / 'own.sqlite3'}"
        upgrade(url)
        yield url
        return
    assert postgres_url is not None
    admin = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    name = f"ogv_own_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        dispose_all()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
