"""The configured database: `models.db` opens any URL, this module names ours.

Every process of the service reaches its database through `session_factory()`
here, which reads OGV_DATABASE_URL and its pool size from the settings; the
models below know nothing of the settings.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from models import db
from worker.settings import get_settings


def session_factory(url: str | None = None, pool_size: int | None = None) -> sessionmaker[Session]:
    """The process-wide session factory for `url`, by default the configured database
    with `OGV_DATABASE_POOL_SIZE` connections (a database named in the settings must
    exist; only the embedded default makes its own file)."""
    if url is not None:
        return db.session_factory(url, pool_size)
    settings = get_settings()
    return db.session_factory(
        settings.effective_database_url,
        pool_size or settings.database_pool_size,
        must_exist=not settings.is_embedded,
    )
