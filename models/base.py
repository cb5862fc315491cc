"""The declarative base, shared column types and the domain's enumerations."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, Dialect, MetaData, TypeDecorator
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend.

    PostgreSQL stores `timestamptz`; SQLite keeps the text of a naive UTC value, so
    values are converted on the way in and tagged as UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}


def enum_column(cls: type[enum.Enum]) -> SAEnum:
    """A portable string column for a StrEnum: stores the values, checks nothing natively."""
    return SAEnum(cls, native_enum=False, length=32, values_callable=lambda e: [m.value for m in e])


def utcnow() -> datetime:
    return datetime.now(UTC)


class Outcome(enum.StrEnum):
    """The final answer to one validation request (SPEC §3 and §5)."""

    VALID = "valid"
    INVALID_KEY = "invalid_key"
    KEY_LACKS_ACCESS = "key_lacks_access"
    REJECTED = "rejected"
    INVALID_INTEGRATION = "invalid_integration"
    INVALID_TEAM = "invalid_team"
    ERROR = "error"

    @property
    def judges_key(self) -> bool:
        """True when Opsgenie gave a final answer about the key itself."""
        return self in KEY_VERDICTS


FAILING_VERDICTS = frozenset({Outcome.INVALID_KEY, Outcome.KEY_LACKS_ACCESS, Outcome.REJECTED})
"""Verdicts that say the key no longer works: from `valid`, each is confirmed first."""

KEY_VERDICTS = frozenset(
    {Outcome.VALID, Outcome.INVALID_KEY, Outcome.KEY_LACKS_ACCESS, Outcome.REJECTED}
)


class TeamStatus(enum.StrEnum):
    """What we last learned about a team's key; `unknown` until a final answer."""

    UNKNOWN = "unknown"
    VALID = "valid"
    INVALID_KEY = "invalid_key"
    KEY_LACKS_ACCESS = "key_lacks_access"
    REJECTED = "rejected"


class IntegrationStatus(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"


class RequestState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    CONFIRMING = "confirming"
    """A valid team's key got a failing verdict: a second check will confirm it first."""
    DONE = "done"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in (RequestState.DONE, RequestState.FAILED)


class Requester(enum.StrEnum):
    CLI = "cli"
    API = "api"
    BEAT = "beat"
