"""Engines and sessions.

One engine per process, created lazily. After a fork (Celery's prefork pool) the
child must not reuse the parent's pooled connections, so `reset_after_fork()`
drops them without closing them, as SQLAlchemy's multiprocessing guide advises.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BindParameter,
    ClauseElement,
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    any_,
    bindparam,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.orm import QueryableAttribute, Session, sessionmaker


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while a worker writes; the busy timeout makes writers
    # queue instead of failing with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


DEFAULT_POOL_SIZE = 20


class DatabaseMissing(Exception):
    """Raised when a configured SQLite database, or the folder it belongs in, is missing."""

    def __init__(self, path: Path, *, folder: bool) -> None:
        what = (
            f"the folder {path} of the SQLite database" if folder else f"the SQLite database {path}"
        )
        super().__init__(f"{what} does not exist")
        self.path = path
        self.folder = folder


def require_sqlite_database(url: str, *, creating: bool = False) -> None:
    """Refuse a SQLite `url` whose folder (or, unless `creating`, whose file) is missing.

    Connecting would otherwise make an empty database (and `build_engine` its folder)
    wherever a mistyped URL points, and the first query would then report a missing
    schema instead of a wrong path. Other databases are left to their server.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if not path.parent.is_dir():
        raise DatabaseMissing(path.parent, folder=True)
    if not creating and not path.exists():
        raise DatabaseMissing(path, folder=False)


def build_engine(url: str, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """An engine for `url`, with the per-dialect settings the service relies on.

    The pool keeps up to `pool_size` connections open and opens as many again for a
    burst. Keep it above the threads that use the database at once (a worker's
    `--concurrency` on the threads pool, the API's thread pool): a connection
    beyond the kept ones is closed on return, and PostgreSQL starts a process for
    every new one.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=pool_size)


_FACTORIES: dict[str, sessionmaker[Session]] = {}
_LOCK = threading.Lock()


def session_factory(url: str | None = None, pool_size: int | None = None) -> sessionmaker[Session]:
    """The process-wide session factory for `url` (default: the configured database).

    `pool_size` (default: `OGV_DATABASE_POOL_SIZE` for the configured database,
    else `DEFAULT_POOL_SIZE`) counts when the factory is first made.
    """
    explicit = False
    if url is None:
        from worker.settings import get_settings

        settings = get_settings()
        url = settings.effective_database_url
        pool_size = pool_size or settings.database_pool_size
        explicit = not settings.is_embedded  # the embedded default makes its own file
    with _LOCK:
        if url not in _FACTORIES:
            if explicit:
                require_sqlite_database(url)
            engine = build_engine(url, pool_size or DEFAULT_POOL_SIZE)
            _FACTORIES[url] = sessionmaker(engine, expire_on_commit=False)
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


def one_of(
    on: Session | Connection,
    column: ColumnElement[Any] | QueryableAttribute[Any],
    values: Iterable[Any],
) -> ColumnElement[bool]:
    """`column IN (values)`; on PostgreSQL, `column = ANY(array)` with one parameter.

    An IN list renders one parameter per value, so every size is another statement
    to compile, convert and plan, and a long one is never cached (psycopg caches
    statements up to 4 KB). With one array the statement is the same for any number
    of values.
    """
    dialect = on.dialect if isinstance(on, Connection) else on.get_bind().dialect
    if dialect.name == "postgresql":
        return column == any_(array_of(column, values))
    return column.in_(list(values))


def array_of(
    column: ColumnElement[Any] | QueryableAttribute[Any], values: Iterable[Any]
) -> BindParameter[Any]:
    """`values` as one PostgreSQL array parameter, typed like `column`'s values."""
    # Imported here, not at the top: a SQLite-only process never loads the PostgreSQL dialect.
    from sqlalchemy.dialects.postgresql import ARRAY

    return bindparam(None, list(values), type_=ARRAY(column.type))


def from_arrays(
    table: Table, rows: Sequence[Mapping[str, Any]], **same: Any
) -> tuple[list[str], Select[Any]]:
    """`rows` (all with the same keys) as a PostgreSQL SELECT over one array per column,
    in their order, for `insert(table).from_select(*from_arrays(table, rows))`.

    `same` gives columns that every row shares, each as one parameter (or a SQL
    expression, evaluated per row). One statement whatever the number of rows:
    an executemany runs the statement once per row, and a multi-row VALUES list is
    a new, long statement for every size.
    """
    names = list(rows[0])
    arrays = [array_of(table.c[name], [row[name] for row in rows]) for name in names]
    given = func.unnest(*arrays).table_valued(*names, with_ordinality="position").render_derived()
    shared = [
        value if isinstance(value, ClauseElement) else bindparam(None, value, table.c[name].type)
        for name, value in same.items()
    ]
    # WITH ORDINALITY: the rows go in in the order given (callers that lock in index
    # order rely on it), which a plain unnest() keeps only in practice.
    columns = select(*(given.c[name] for name in names), *shared).order_by(given.c.position)
    return [*names, *same], columns
