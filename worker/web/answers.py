"""How the API answers: JSON that is never cached, views in their documented shapes,
and refusals as `{"error": {"code", "message"}}`."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import date
from typing import Any

from aiohttp import web

from worker.web.errors import ApiError


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):  # a view holding views (`SavedTeam`)
        return {k: _jsonable(v) for k, v in value.items()}
    # A datetime is a date too: both are written as ISO 8601.
    return value.isoformat() if isinstance(value, date) else value


def to_json(record: Any) -> dict[str, Any]:
    """A view (`RequestView`, `TeamRow`, `SavedTeam`...) as the API shows it (the
    documented schemas)."""
    return {k: _jsonable(v) for k, v in dataclasses.asdict(record).items()}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        data, status=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def error_response(error: ApiError) -> web.Response:
    body = {"error": {"code": error.code, "message": error.message}}
    return json_response(body, error.status, error.headers)
