"""Time-ordered request ids (UUID version 7, RFC 9562).

A request id starts with the millisecond it was made (48 bits), then the version,
then random bits. Two things follow:

- the primary key's index grows at its right edge, like a sequence's, instead of
  taking a random page of a large index for every insert;
- an id carries its age. Once retention has deleted every prunable request made
  before some moment (`retention_marks.pruned_before`), an id older than that which
  is no longer on record was pruned: the API answers 410 `expired`, not 404.

Ids made before revision 0009 are random (version 4) and carry no age: once pruned,
the API answers 404 for them.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Uuid, literal_column

_VERSION_7 = 0x7 << 76
_VARIANT = 0x2 << 62
_RANDOM_A = (1 << 12) - 1
_RANDOM_B = (1 << 62) - 1


def new_request_id(now_ms: int | None = None) -> uuid.UUID:
    """A UUIDv7 for a request made now (or at `now_ms`, milliseconds since the epoch)."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    random = int.from_bytes(os.urandom(10), "big")
    value = (
        (ms & ((1 << 48) - 1)) << 80
        | _VERSION_7
        | (random >> 62 & _RANDOM_A) << 64
        | _VARIANT
        | (random & _RANDOM_B)
    )
    return uuid.UUID(int=value)


def made_at(request_id: uuid.UUID) -> datetime | None:
    """When a time-ordered id was made; None for a random (pre-0009) id."""
    if request_id.version != 7:
        return None
    return datetime.fromtimestamp((request_id.int >> 80) / 1000, UTC)


def request_id_sql() -> ColumnElement[uuid.UUID]:
    """The same kind of id made by PostgreSQL, one per row of an INSERT ... SELECT:
    the first six bytes of a random UUID replaced by the clock's milliseconds, and
    its version nibble turned from 4 into 7 (bits 52 and 53 set)."""
    return literal_column(
        "encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid()) PLACING "
        "substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) "
        "FROM 3) FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid",
        type_=Uuid(),
    )
