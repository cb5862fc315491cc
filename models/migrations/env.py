"""Alembic environment: runs the migrations against the URL `models.migrate` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from models import Base
from models.db import build_engine


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "models.migrate sets sqlalchemy.url"
    engine = build_engine(url)
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


run_migrations_online()
