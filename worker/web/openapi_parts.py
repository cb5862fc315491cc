"""The building blocks of the OpenAPI document (`worker.web.openapi`): references,
JSON answers, the shared error responses, and the parameters several routes take,
each with the format its reader in `worker.web.inputs` enforces."""

from __future__ import annotations

from typing import Any

from models import TeamStatus
from models.integration import BIGINT_MAX, IDEMPOTENCY_KEY_MAX, INTEGER_MAX
from worker.cursors import CURSOR_MAX, CURSOR_PATTERN, DEFAULT_PAGE, MAX_PAGE
from worker.web.inputs import IDEMPOTENCY_KEY_PATTERN
from worker.web.schemas import team_id_schema


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "IdempotencyConflict",
        410: "Expired",
        413: "TooLarge",
        415: "UnsupportedMediaType",
        422: "InvalidRequest",
        500: "InternalError",
        503: "Unavailable",
    }
    return {str(s): {"$ref": f"#/components/responses/{names[s]}"} for s in statuses}


def organization_id() -> dict[str, Any]:
    return {
        "name": "organization_id",
        "in": "path",
        "required": True,
        "description": "Decimal digits.",
        "schema": {"type": "integer", "minimum": 1, "maximum": BIGINT_MAX},
    }


def page_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "status",
            "in": "query",
            "schema": {"type": "string", "enum": [s.value for s in TeamStatus]},
        },
        *bounds_parameters(),
    ]


def bounds_parameters() -> list[dict[str, Any]]:
    """`limit` and `cursor` of a page ordered by team id."""
    return [
        {
            "name": "limit",
            "in": "query",
            "description": "Decimal digits.",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_PAGE,
                "default": DEFAULT_PAGE,
            },
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "`next_cursor` of the previous page: the page starts after the team "
            "it names. Any other well-formed cursor names a place in the order as well.",
            "schema": {
                "type": "string",
                "minLength": 2,
                "maxLength": CURSOR_MAX,
                "pattern": CURSOR_PATTERN,
            },
        },
    ]


def integration_id() -> dict[str, Any]:
    return {
        "name": "integration_id",
        "in": "path",
        "required": True,
        "description": "Decimal digits.",
        "schema": {"type": "integer", "minimum": 1, "maximum": INTEGER_MAX},
    }


def team_id() -> dict[str, Any]:
    return {
        "name": "team_id",
        "in": "path",
        "required": True,
        "schema": team_id_schema("URL-encoded in the path."),
    }


def wait() -> dict[str, Any]:
    return {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "Wait up to this many seconds for the outcome (capped by "
        "OGV_API_MAX_WAIT, default 30). A decimal number: 5, 0.5 or 1e-3; no sign.",
        "schema": {"type": "number", "minimum": 0},
    }


def idempotency_key(what: str) -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": f"The same key returns the same {what}. Printable ASCII.",
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": IDEMPOTENCY_KEY_MAX,
            "pattern": IDEMPOTENCY_KEY_PATTERN,
        },
    }


def body(component: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": ref(component)}}}
