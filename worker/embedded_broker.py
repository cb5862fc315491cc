"""The embedded default broker: kombu's SQLAlchemy transport on a SQLite file.

It needs no server, so a fresh machine can run the whole pipeline. Kombu's
transport hands every transport option to `create_engine()`, which refuses the
virtual transport's own `polling_interval`; this subclass sets the interval on the
class instead, short enough that the demo does not wait a second per hop.
Registered as the `ogvsqla` scheme (`ogvsqla+sqlite:///path`).
"""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Transport as SQLAlchemyTransport

SCHEME = "ogvsqla"
POLLING_INTERVAL = 0.1


class Transport(SQLAlchemyTransport):
    polling_interval = POLLING_INTERVAL


def register() -> None:
    TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")
