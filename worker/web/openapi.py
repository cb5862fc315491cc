"""The OpenAPI 3.1 document of the HTTP API (served at `GET /v1/openapi.json`).

The paths, error codes and prose are written here by hand; the component schemas of
what the API answers are generated from the view dataclasses (`worker.web.schemas`),
and the input formats are imported from their owners (`models.integration`,
`worker.cursors`, `worker.web.inputs`), so the document and the code say the same.
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

from models import IntegrationStatus, TeamStatus
from models.integration import BASE_URL_MAX, BIGINT_MAX, IDEMPOTENCY_KEY_MAX, INTEGER_MAX
from worker import audit
from worker.cursors import CURSOR_MAX, CURSOR_PATTERN, DEFAULT_PAGE, MAX_PAGE
from worker.web.inputs import (
    BASE_URL_PATTERN,
    BODY_LIMIT,
    DIGITS_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    SINCE_PATTERN,
)
from worker.web.schemas import team_id_schema, view_schemas
from worker.web.scopes import document_scopes

ERROR_CODES = {
    "malformed_request": "400: not well-formed HTTP (a bad or over-long request line or "
    "header, a body whose framing or Content-Encoding is broken); nothing of it is repeated",
    "malformed_json": "400: the body is not JSON",
    "unauthorized": "401: no bearer token, or the wrong one",
    "forbidden": "403: the token lacks the route's scope, or may not ask for that organization",
    "not_found": "404: no such request, team, integration, organization or route",
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


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error_response(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _errors(*statuses: int) -> dict[str, Any]:
    names = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "IdempotencyConflict",
        413: "TooLarge",
        415: "UnsupportedMediaType",
        422: "InvalidRequest",
        500: "InternalError",
        503: "Unavailable",
    }
    return {str(s): {"$ref": f"#/components/responses/{names[s]}"} for s in statuses}


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
            "base_urls": {"type": "array", "items": _ref("BaseUrlGuard")},
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


def _post_validations() -> dict[str, Any]:
    request = _json(_ref("ValidationRequest"), "")
    location = {
        "Location": {
            "description": "The request's URL (`/v1/validations/{id}`).",
            "schema": {"type": "string"},
        }
    }
    return {
        "operationId": "requestValidation",
        "summary": "Ask for a check of a team's key",
        "description": "Records the request and queues it. While a check of the team is "
        "pending or running, that request is returned instead of a new one. "
        "`invalid_integration` and `invalid_team` are outcomes, not errors. A query "
        "parameter other than `wait`, or one given twice, is refused (422).",
        "parameters": [
            {
                "name": "wait",
                "in": "query",
                "required": False,
                "description": "Wait up to this many seconds for the outcome (capped by "
                "OGV_API_MAX_WAIT, default 30). A decimal number: 5, 0.5 or 1e-3; no sign.",
                "schema": {"type": "number", "minimum": 0},
            },
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "The same key returns the same request. Printable ASCII.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": IDEMPOTENCY_KEY_MAX,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                },
            },
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("ValidationInput")}},
        },
        "responses": {
            "200": {
                **request,
                "description": "The request has its outcome (state done or failed).",
                "headers": location,
            },
            "202": {
                **request,
                "description": "Queued or running; poll the Location.",
                "headers": location,
            },
            **_errors(400, 401, 409, 413, 415, 422, 500, 503),
        },
    }


def _organization_id() -> dict[str, Any]:
    return {
        "name": "organization_id",
        "in": "path",
        "required": True,
        "description": "Decimal digits.",
        "schema": {"type": "integer", "minimum": 1, "maximum": BIGINT_MAX},
    }


def _page_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "status",
            "in": "query",
            "schema": {"type": "string", "enum": [s.value for s in TeamStatus]},
        },
        *_bounds_parameters(),
    ]


def _bounds_parameters() -> list[dict[str, Any]]:
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


def _integration_id() -> dict[str, Any]:
    return {
        "name": "integration_id",
        "in": "path",
        "required": True,
        "description": "Decimal digits.",
        "schema": {"type": "integer", "minimum": 1, "maximum": INTEGER_MAX},
    }


def _team_id() -> dict[str, Any]:
    return {
        "name": "team_id",
        "in": "path",
        "required": True,
        "schema": team_id_schema("URL-encoded in the path."),
    }


def _wait() -> dict[str, Any]:
    return {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "Wait up to this many seconds for the outcome (capped by "
        "OGV_API_MAX_WAIT, default 30). A decimal number: 5, 0.5 or 1e-3; no sign.",
        "schema": {"type": "number", "minimum": 0},
    }


def _idempotency_key(what: str) -> dict[str, Any]:
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


def _body(component: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(component)}}}


NO_QUERY = "It takes no query parameter (422)."
MANAGE = "Needs the `manage` scope."
WRITE_ERRORS = (400, 401, 404, 413, 415, 422, 500, 503)
KEY_NOTE = (
    "The key travels in the body only; it is stored encrypted and never answered. A "
    "malformed key is refused (422) without being repeated."
)


def _integrations_paths() -> dict[str, Any]:
    location = {"Location": {"description": "The integration's URL.", "schema": {"type": "string"}}}
    integration = _json(_ref("Integration"), "The integration.")
    return {
        "/v1/organizations/{organization_id}/integrations": {
            "get": {
                "operationId": "listIntegrations",
                "summary": "An organization's integrations, by id, a page at a time",
                "description": "An organization without any has an empty page; one the "
                "token may not see answers 404. A query parameter not listed here, or one "
                "given twice, is refused (422).",
                "parameters": [
                    _organization_id(),
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": [s.value for s in IntegrationStatus]},
                    },
                    _bounds_parameters()[0],
                    {
                        "name": "cursor",
                        "in": "query",
                        "description": "`next_cursor` of the previous page: the page starts "
                        "after the integration of that id.",
                        "schema": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 10,
                            "pattern": DIGITS_PATTERN,
                        },
                    },
                ],
                "responses": {
                    "200": _json(_ref("IntegrationPage"), "One page of integrations."),
                    **_errors(400, 401, 404, 422, 500, 503),
                },
            },
            "post": {
                "operationId": "addIntegration",
                "summary": "Install an Opsgenie or JSM Operations account for the organization",
                "description": "Installing an account the organization has installed already "
                f"enables it again (200). {MANAGE} {NO_QUERY}",
                "parameters": [_organization_id(), _idempotency_key("integration")],
                "requestBody": _body("IntegrationInput"),
                "responses": {
                    "201": {**integration, "description": "Installed.", "headers": location},
                    "200": {
                        **integration,
                        "description": "Installed already, or the Idempotency-Key's integration.",
                        "headers": location,
                    },
                    **_errors(409, *WRITE_ERRORS),
                },
            },
        },
        "/v1/organizations/{organization_id}/integrations/{integration_id}": {
            "get": {
                "operationId": "getIntegration",
                "summary": "One of the organization's integrations",
                "description": NO_QUERY,
                "parameters": [_organization_id(), _integration_id()],
                "responses": {"200": integration, **_errors(400, 401, 404, 422, 500, 503)},
            },
            "patch": {
                "operationId": "changeIntegration",
                "summary": "Disable the integration, or enable it again",
                "description": "While it is disabled, checks of its teams end "
                f"`invalid_integration` and beat does not re-check them. {MANAGE} {NO_QUERY}",
                "parameters": [_organization_id(), _integration_id()],
                "requestBody": _body("IntegrationChange"),
                "responses": {"200": integration, **_errors(*WRITE_ERRORS)},
            },
            "delete": {
                "operationId": "removeIntegration",
                "summary": "Remove the integration from the organization, with its teams",
                "description": "Their open checks end (`integration_removed`); their status "
                "history stays until OGV_HISTORY_RETENTION_DAYS prunes it. "
                f"{MANAGE} {NO_QUERY}",
                "parameters": [_organization_id(), _integration_id()],
                "responses": {
                    "200": _json(_ref("RemovedIntegration"), "Removed."),
                    **_errors(400, 401, 404, 422, 500, 503),
                },
            },
        },
        "/v1/organizations/{organization_id}/integrations/{integration_id}/teams": {
            "get": {
                "operationId": "listIntegrationTeams",
                "summary": "An integration's teams, by team id, a page at a time",
                "description": "A query parameter not listed here, or one given twice, is "
                "refused (422).",
                "parameters": [_organization_id(), _integration_id(), *_page_parameters()],
                "responses": {
                    "200": _json(_ref("TeamPage"), "One page of teams."),
                    **_errors(400, 401, 404, 422, 500, 503),
                },
            },
            "post": {
                "operationId": "addTeam",
                "summary": "Store a team's key, and ask for a check of it at once",
                "description": f"{KEY_NOTE} The answer holds the team and its check: with "
                "`wait`, the check's outcome if it came in time (a new key is never "
                f"`confirming`). {MANAGE} A query parameter other than `wait` is refused (422).",
                "parameters": [
                    _organization_id(),
                    _integration_id(),
                    _wait(),
                    _idempotency_key("team and its first check"),
                ],
                "requestBody": _body("TeamInput"),
                "responses": {
                    "201": {
                        **_json(_ref("SavedTeam"), "Stored, and its check asked for."),
                        "headers": {
                            "Location": {
                                "description": "The team's URL (`/v1/teams/{team_id}`).",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "200": _json(_ref("SavedTeam"), "The Idempotency-Key's team and its check."),
                    **_errors(409, *WRITE_ERRORS),
                },
            },
        },
    }


def _team_paths() -> dict[str, Any]:
    return {
        "/v1/teams/{team_id}/key": {
            "put": {
                "operationId": "replaceKey",
                "summary": "Replace a team's key, and ask for a check of the new one at once",
                "description": f"{KEY_NOTE} The team's `key_version` grows and its status is "
                "`unknown` until the new check answers; a check of the old key still under "
                "way ends `error` (`key_replaced`) and changes nothing. With `wait`, the new "
                f"check's outcome if it came in time. {MANAGE} A query parameter other than "
                "`wait` is refused (422).",
                "parameters": [_team_id(), _wait()],
                "requestBody": _body("KeyInput"),
                "responses": {
                    "200": _json(_ref("SavedTeam"), "Replaced, and its check asked for."),
                    **_errors(*WRITE_ERRORS),
                },
            }
        },
    }


def _audit() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "description": description, "schema": schema}

    return {
        "operationId": "listAuditEvents",
        "summary": "The audit log: who did what, to which organization and target, newest first",
        "description": "Operators' (`cli:<os user>`) and callers' (`token:<name>`) actions, "
        "as `ogv audit list` shows them. A token limited to some organizations reads only "
        "their events. A query parameter not listed here, or one given twice, is refused (422).",
        "parameters": [
            {**_organization_id(), "in": "query", "required": False},
            query("action", {"type": "string", "enum": list(audit.ACTIONS)}, "Only this action."),
            query(
                "since",
                {"type": "string", "pattern": SINCE_PATTERN},
                "Only events at or after: an ISO 8601 date, or date and time (UTC unless it "
                "says), such as 2027-01-31T12:00Z.",
            ),
            query(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": audit.MAX_PAGE, "default": 50},
                "Decimal digits.",
            ),
            query(
                "cursor",
                {"type": "string", "pattern": DIGITS_PATTERN, "maxLength": 10},
                "`next_cursor` of the previous page.",
            ),
        ],
        "responses": {
            "200": _json(_ref("AuditPage"), "One page of events, newest first."),
            **_errors(400, 401, 422, 500, 503),
        },
    }


def _paths() -> dict[str, Any]:
    public: list[dict[str, Any]] = []
    return {
        "/v1/validations": {"post": _post_validations()},
        "/v1/validations/{request_id}": {
            "get": {
                "operationId": "getValidation",
                "summary": "A request's state and outcome",
                "parameters": [
                    {
                        "name": "request_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "format": "uuid"},
                    }
                ],
                "responses": {
                    "200": _json(_ref("ValidationRequest"), "The request."),
                    **_errors(400, 401, 404, 500, 503),
                },
            }
        },
        "/v1/teams/{team_id}": {
            "get": {
                "operationId": "getTeam",
                "summary": "A team's status",
                "parameters": [
                    {
                        "name": "team_id",
                        "in": "path",
                        "required": True,
                        "schema": team_id_schema("URL-encoded in the path."),
                    }
                ],
                "responses": {
                    "200": _json(_ref("Team"), "The team."),
                    **_errors(400, 401, 404, 422, 500, 503),
                },
            },
            "delete": {
                "operationId": "removeTeam",
                "summary": "Remove a team and its key",
                "description": "Its open checks end (`team_removed`); its status history stays "
                f"until OGV_HISTORY_RETENTION_DAYS prunes it. {MANAGE} {NO_QUERY}",
                "parameters": [_team_id()],
                "responses": {
                    "200": _json(_ref("RemovedTeam"), "Removed."),
                    **_errors(400, 401, 404, 422, 500, 503),
                },
            },
        },
        **_team_paths(),
        "/v1/organizations/{organization_id}/teams": {
            "get": {
                "operationId": "listTeams",
                "summary": "An organization's teams, by team id, a page at a time",
                "description": "A query parameter not listed here, or one given twice, is "
                "refused (422).",
                "parameters": [_organization_id(), *_page_parameters()],
                "responses": {
                    "200": _json(_ref("TeamPage"), "One page of teams."),
                    **_errors(400, 401, 404, 422, 500, 503),
                },
            }
        },
        "/v1/organizations/{organization_id}/migration": {
            "get": {
                "operationId": "getMigrationReport",
                "summary": "An organization's readiness for JSM Operations, as recorded",
                "description": "The figures of `ogv migration report` for one organization, "
                "read from the last probes; this call probes nothing. It takes no query "
                "parameter (422).",
                "parameters": [_organization_id()],
                "responses": {
                    "200": _json(_ref("MigrationReport"), "The organization's report."),
                    **_errors(400, 401, 404, 422, 500, 503),
                },
            }
        },
        **_integrations_paths(),
        "/v1/guard": {
            "get": {
                "operationId": "getGuard",
                "summary": "Each base URL's mass-change guard, and the changes it holds",
                "description": "Whether the guard of each base URL is tripped, its current "
                "window, and how many changes it holds (`ogv changes list`). It takes no query "
                "parameter (422).",
                "responses": {
                    "200": _json(_ref("Guard"), "Every base URL counted or holding changes."),
                    **_errors(400, 401, 422, 500, 503),
                },
            }
        },
        "/v1/changes/held": {
            "get": {
                "operationId": "listHeldChanges",
                "summary": "The changes the mass-change guard holds, by team id, a page at a time",
                "description": "An operator releases or discards them with `ogv changes "
                "release` or `ogv changes discard`. A query parameter not listed here, or one "
                "given twice, is refused (422).",
                "parameters": [
                    {
                        "name": "base_url",
                        "in": "query",
                        "description": "Only the changes held for this base URL, exactly as "
                        "`GET /v1/guard` lists it; another matches nothing.",
                        "schema": {
                            "type": "string",
                            "minLength": 8,
                            "maxLength": BASE_URL_MAX,
                            "pattern": BASE_URL_PATTERN,
                        },
                    },
                    *_bounds_parameters(),
                ],
                "responses": {
                    "200": _json(_ref("HeldPage"), "One page of held changes."),
                    **_errors(400, 401, 422, 500, 503),
                },
            }
        },
        "/v1/audit": {"get": _audit()},
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": public,
                "responses": {
                    "200": _json({"type": "object"}, "The OpenAPI document."),
                    **_errors(400),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Whether the database and the broker are reachable",
                "security": public,
                "responses": {
                    "200": _json(_ref("Health"), "Both are reachable."),
                    **_errors(400),
                    "503": _json(_ref("Health"), "At least one is not."),
                },
            }
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
        "paths": document_scopes(_paths()),
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
