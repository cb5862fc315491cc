"""Engines and sessions.

One engine per process, created lazily. After a fork (Celery's prefork pool) the
child must not reuse the parent's pooled connections, so `reset_after_fork()`
drops them without closing them, as SQLAlchemy's multiprocessing guide advises.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while a worker writes; the busy timeout makes writers
    # queue instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def build_engine(url: str) -> Engine:
    """An engine for `url`, with the per-dialect settings the service relies on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


_FACTORIES: dict[str, sessionmaker[Session]] = {}
_LOCK = threading.Lock()


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    """The process-wide session factory for `url` (default: the configured database)."""
    if url is None:
        from worker.settings import get_settings

        url = get_settings().effective_database_url
    with _LOCK:
        if url not in _FACTORIES:
            _FACTORIES[url] = sessionmaker(build_engine(url), expire_on_commit=False)
        return _FACTORIES[url]


@contextmanager
def transaction(url: str | None = None) -> Iterator[Session]:
    """`with transaction() as session:` one short unit of work, committed on success."""
    with session_factory(url)() as session, session.begin():
        yield session


def reset_after_fork() -> None:
    """Forget connections inherited from a parent process (call in the child)."""
    with _LOCK:
        for factory in _FACTORIES.values():
            engine = factory.kw["bind"]
            engine.dispose(close=False)


def dispose_all() -> None:
    """Close every pooled connection (tests and shutdown)."""
    with _LOCK:
        for factory in _FACTORIES.values():
            factory.kw["bind"].dispose()
        _FACTORIES.clear()
