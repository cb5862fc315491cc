"""How the API refuses a request, and how blocking calls leave the event loop.

`ApiError` carries a stable code (`worker.web.openapi.ERROR_CODES`) to the errors
middleware; `malformed` is the one for a request that is not well-formed HTTP.
`off_loop` runs SQLAlchemy's sync API on the thread pool and turns an unreachable
database, broker or shared Redis into a 503 the caller can retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import TypeVar

import kombu.exceptions
from sqlalchemy import exc as sa_exc

from worker.checks.guard import SharedStateUnavailable

log = logging.getLogger("ogv.api")

T = TypeVar("T")


class ApiError(Exception):
    """Raised by a handler to refuse a request with a stable code."""

    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


_UNAVAILABLE: dict[type[BaseException], tuple[str, str]] = {
    sa_exc.OperationalError: ("database_unavailable", "the database is unreachable"),
    sa_exc.InterfaceError: ("database_unavailable", "the database is unreachable"),
    sa_exc.TimeoutError: ("database_unavailable", "no database connection was free in time"),
    SharedStateUnavailable: (
        "shared_state_unavailable",
        "the workers' shared Redis is unreachable (the mass-change guard lives there)",
    ),
    kombu.exceptions.OperationalError: (
        "broker_unavailable",
        "the request is recorded but could not be queued yet; it will be, and asking "
        "again returns it",
    ),
}


async def off_loop(call: Callable[[], T]) -> T:
    """Run a blocking call on the thread pool; unreachable services become a 503."""
    try:
        return await asyncio.to_thread(call)
    except tuple(_UNAVAILABLE) as exc:
        code, message = next(v for k, v in _UNAVAILABLE.items() if isinstance(exc, k))
        log.warning("api.unavailable", extra={"code": code, "error": type(exc).__name__})
        raise ApiError(503, code, message, {"Retry-After": "1"}) from exc


def malformed() -> ApiError:
    """The refusal of a request that is not well-formed HTTP; its message quotes nothing."""
    return ApiError(
        400, "malformed_request", "the request is not well-formed HTTP; nothing of it is repeated"
    )
