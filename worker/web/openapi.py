"""The OpenAPI 3.1 document of the HTTP API (served at `GET /v1/openapi.json`).

The paths, error codes and prose are written by hand: the error codes and shared
responses here, the routes' operations in `worker.web.openapi_paths` (the front
door's in `worker.web.openapi_inventory`), their building blocks in
`worker.web.openapi_parts`. The component schemas of what the API answers are
generated from the view dataclasses (`worker.web.schemas`), and the input formats
are imported from their owners (`models.integration`, `worker.cursors`,
`worker.web.inputs`), so the document and the code say the same.
The API tests check every answer they get against it, and tests/test_api_schema.py
sends requests generated from it: what it calls valid is never refused as invalid,
and what it calls invalid always is.

JSON Schema cannot tell 7 from 7.0, nor say how a number is written in a query
string; the descriptions say it: ids, `limit` and the body's integers are written
as integer literals (7, never 7.0, "7" or true), `wait` as a decimal number (5, 0.5,
1e-3).
"""

from __future__ import annotations

from typing import Any

from worker.web.inputs import BODY_LIMIT
from worker.web.openapi_parts import json_answer, ref
from worker.web.openapi_paths import paths
from worker.web.schemas import view_schemas
from worker.web.scopes import document_scopes

ERROR_CODES = {
    "malformed_request": "400: not well-formed HTTP (a bad or over-long request line or "
    "header, a body whose framing or Content-Encoding is broken); nothing of it is repeated",
    "malformed_json": "400: the body is not JSON",
    "unauthorized": "401: no bearer token, or the wrong one",
    "forbidden": "403: the token lacks the route's scope, or may not ask for that organization",
    "not_found": "404: no such request, team, integration, organization or route",
    "expired": "410: the request was older than OGV_REQUEST_RETENTION_DAYS and was pruned",
    "method_not_allowed": "405: the route exists, not with that method",
    "idempotency_conflict": "409: the Idempotency-Key was used for another team, or another create",
    "duplicate_team": "409: the integration has a team with that label",
    "too_large": "413: the body is over the size limit",
    "unsupported_media_type": "415: the body is not application/json",
    "invalid_request": "422: a field, header or query parameter is missing or of the wrong type",
    "internal_error": "500: a bug; logged as `api.unhandled`, never with the request body",
    "database_unavailable": "503: the database could not be reached; retry",
    "broker_unavailable": "503: recorded, but not published yet (the outbox will); retry",
    "busy": "503: the request could not be recorded this time; retry",
    "shared_state_unavailable": "503: the workers' shared Redis could not be reached; retry",
}


def _error_response(description: str) -> dict[str, Any]:
    return json_answer(ref("Error"), description)


def _guard() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The mass-change guard of every base URL it counted or holds "
        "changes of, tripped ones first.",
        "required": ["where", "base_urls"],
        "additionalProperties": False,
        "properties": {
            "where": {
                "type": "string",
                "enum": ["redis", "database"],
                "description": "Where the workers share the windows (OGV_REDIS_URL).",
            },
            "base_urls": {"type": "array", "items": ref("BaseUrlGuard")},
        },
    }


def _schemas() -> dict[str, Any]:
    return {
        **view_schemas(),
        "Guard": _guard(),
        "Health": {
            "type": "object",
            "required": ["status", "checks"],
            "properties": {
                "status": {"type": "string", "enum": ["ok", "unavailable"]},
                "checks": {
                    "type": "object",
                    "required": ["database", "broker"],
                    "additionalProperties": {"type": "string", "enum": ["ok", "unavailable"]},
                },
                "key_fingerprints": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "To an authenticated caller only: a short hash of each "
                    "encryption key the API holds, newest first (never a key). "
                    "`ogv keys rotate` compares them.",
                },
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "additionalProperties": False,
                    "properties": {
                        "code": {
                            "type": "string",
                            "enum": list(ERROR_CODES),
                            "description": "Stable; scripts branch on it. "
                            + "; ".join(
                                f"`{code}` {meaning}" for code, meaning in ERROR_CODES.items()
                            ),
                        },
                        "message": {"type": "string", "description": "For people; may change."},
                    },
                }
            },
        },
    }


def _responses() -> dict[str, Any]:
    retry_after = {
        "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
    }
    return {
        "BadRequest": _error_response(
            "`malformed_request`: not well-formed HTTP, on any route (a bad or over-long "
            "request line or header, a body whose framing or Content-Encoding is broken); "
            "`malformed_json`: the body is not JSON. Nothing of the request is repeated."
        ),
        "Unauthorized": {
            **_error_response("`unauthorized`: no bearer token, or the wrong one."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
        },
        "Forbidden": _error_response(
            "`forbidden`: the token lacks this route's scope (its `x-scopes`), or may not ask "
            "for checks of that organization."
        ),
        "NotFound": _error_response(
            "`not_found`: no such resource, or one of an organization the token may not see."
        ),
        "Expired": _error_response(
            "`expired`: the request finished longer ago than the retention "
            "(OGV_REQUEST_RETENTION_DAYS) and was pruned; its team's status is still there."
        ),
        "IdempotencyConflict": _error_response(
            "`idempotency_conflict`: the Idempotency-Key was used for another team, or for "
            "another create (other fields, or what it created is removed since); "
            "`duplicate_team`: the integration has a team with that label."
        ),
        "TooLarge": _error_response(f"`too_large`: the body is over {BODY_LIMIT // 1024} KiB."),
        "UnsupportedMediaType": _error_response(
            "`unsupported_media_type`: the body must be application/json."
        ),
        "InvalidRequest": _error_response(
            "`invalid_request`: a missing or unknown field, a wrong type, or a bad header or "
            "query parameter."
        ),
        "InternalError": _error_response("`internal_error`: a bug, logged as `api.unhandled`."),
        "Unavailable": {
            **_error_response(
                "`database_unavailable`, `broker_unavailable` or `busy`: try again. After "
                "`broker_unavailable` the request is recorded and the outbox publishes it; "
                "asking again returns it."
            ),
            "headers": retry_after,
        },
    }


def document() -> dict[str, Any]:
    """The whole OpenAPI document, as a JSON-ready dict."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "opsgenie-validator",
            "version": "1",
            "description": "Ask for checks of stored Opsgenie integration keys and read the "
            'answers. Every error is `{"error": {"code", "message"}}` with a stable code, '
            "on every route, even for a request that is not well-formed HTTP. Nothing of a "
            "key, and nothing of a refused value, is ever part of an answer. Integers are "
            'integer literals (7, never 7.0, "7" or true).',
        },
        "security": [{"bearerAuth": []}],
        "paths": document_scopes(paths()),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token of `ogv tokens create` (`ogv_...`) holding the "
                    "operation's scope (its `x-scopes`; every scope includes `read`), or one of "
                    "OGV_API_TOKEN's, which hold every scope. A token limited to some "
                    "organizations sees only them: another's teams, requests and migration "
                    "report answer 404, and a check of one 403.",
                }
            },
            "schemas": _schemas(),
            "responses": _responses(),
        },
    }
