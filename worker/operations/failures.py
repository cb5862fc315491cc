"""Why a command could not run, in one line: the errors an operator meets, explained.

Everything below the CLI raises its own errors (pydantic's, SQLAlchemy's, the
broker's, the OS's). `explain` turns the ones a person can act on into a
`Refusal` with a stable code, a message and, where there is one, the thing to
do next; `ogv` prints it as one line (or `{"error": ...}` with `--json`) instead
of a traceback. `OGV_LOG_LEVEL=DEBUG` keeps the traceback.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass

import kombu.exceptions
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import exc as sa_exc

from models.db import DatabaseMissing
from worker.settings import describe_invalid_settings


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    hint: str | None = None

    def as_json(self) -> dict[str, dict[str, str]]:
        error = {"code": self.code, "message": self.message}
        return {"error": error | ({"hint": self.hint} if self.hint else {})}

    def as_line(self) -> str:
        return f"error ({self.code}): {self.message}" + (f"; {self.hint}" if self.hint else "")


_MISSING_DATABASE = re.compile(r'database "(?P<name>[^"]*)" does not exist')
"""PostgreSQL refusing a connection to a database nobody created."""
_NO_SCHEMA = re.compile(r'no such table|relation "[^"]*" does not exist|undefinedtable', re.I)
_OLD_SCHEMA = re.compile(r'no such column|column "[^"]*" .*does not exist|undefinedcolumn', re.I)


def explain(exc: BaseException) -> Refusal | None:
    """The refusal to show for `exc`, or None when it is a bug (keep the traceback)."""
    if isinstance(exc, ValidationError):
        return Refusal("invalid_setting", describe_invalid_settings(exc))
    if isinstance(exc, DatabaseMissing):
        if exc.folder:
            hint = f"create it (`mkdir -p {exc.path}`), or correct OGV_DATABASE_URL"
        else:
            hint = "correct OGV_DATABASE_URL, or create the database there with `ogv db upgrade`"
        return Refusal("database_missing", str(exc), hint)
    if isinstance(exc, sa_exc.DBAPIError | sa_exc.OperationalError):
        return _explain_database(exc)
    from worker.checks.guard import SharedStateUnavailable

    if isinstance(exc, SharedStateUnavailable):
        return Refusal(
            "shared_state_unavailable",
            _first_line(exc),
            "check OGV_REDIS_URL (or OGV_BROKER_URL when the broker is that Redis)",
        )
    if isinstance(exc, kombu.exceptions.OperationalError | RedisConnectionError):
        return Refusal(
            "broker_unavailable",
            f"the broker is unreachable ({_first_line(exc)})",
            "check OGV_BROKER_URL",
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return Refusal("port_in_use", "the port is already in use", "pick another with --port")
    if isinstance(exc, RuntimeError) and "OGV_" in str(exc):
        return Refusal("invalid_setting", _first_line(exc))
    return None


def _explain_database(exc: sa_exc.SQLAlchemyError) -> Refusal | None:
    detail = _first_line(exc.orig) if isinstance(exc, sa_exc.DBAPIError) else _first_line(exc)
    # Before the schema checks: PostgreSQL says a missing database "does not exist" too,
    # and `ogv db upgrade` cannot create a database, only its schema.
    missing = _MISSING_DATABASE.search(detail)
    if missing is not None:
        name = missing["name"]
        return Refusal(
            "database_missing",
            f'the database "{name}" does not exist',
            f"create it (`createdb {name}`), or correct OGV_DATABASE_URL",
        )
    if _NO_SCHEMA.search(detail):
        return Refusal("not_migrated", "the database has no schema yet", "run `ogv db upgrade`")
    if _OLD_SCHEMA.search(detail):
        return Refusal(
            "not_migrated", "the database schema is older than this version", "run `ogv db upgrade`"
        )
    if isinstance(exc, sa_exc.DataError):  # a number past its column's range, say
        return Refusal("invalid", f"the database refused a value ({detail})")
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
        return Refusal(
            "database_unavailable",
            f"the database is unreachable ({detail})",
            "check OGV_DATABASE_URL",
        )
    return None


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
