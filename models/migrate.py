"""Schema migrations, run from code (`ogv db upgrade`): no alembic.ini to carry around."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from models.db import build_engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's config is an ini parser: a literal % in a URL must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> list[str]:
    """Migrate to `revision`; returns the revisions applied, oldest first (none: up to date)."""
    config = alembic_config(url)
    before = current_revision(url)
    command.upgrade(config, revision)
    after = current_revision(url)
    if after == before:
        return []
    scripts = ScriptDirectory.from_config(config)
    walked = scripts.iterate_revisions(after, before or "base")
    return [script.revision for script in reversed(list(walked))]


def current_revision(url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    engine = build_engine(url, pool_size=1)  # on SQLite, makes the file's folder
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def schema_problem(connection: Connection) -> str | None:
    """Why the schema on `connection` does not fit this code, in words; None when it does.

    The code expects the newest revision: before it, commands fail with a missing
    table or column; after it (a newer release migrated the database), they may.
    """
    current = MigrationContext.configure(connection).get_current_revision()
    scripts = ScriptDirectory(str(MIGRATIONS))
    head = scripts.get_current_head()
    if current == head:
        return None
    if current is None:
        return "the database has no schema yet: run `ogv db upgrade`"
    if current in {script.revision for script in scripts.walk_revisions()}:
        return f"the schema is at revision {current}, behind {head}: run `ogv db upgrade`"
    return f"the schema is at revision {current}, which this release does not know (newer code?)"


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def revision(url: str, message: str) -> None:
    """Autogenerate a migration from the models (for developers)."""
    command.revision(alembic_config(url), message=message, autogenerate=True)
