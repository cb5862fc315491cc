"""The OpenAPI 3.1 document of the HTTP API (served at `GET /v1/openapi.json`).

Written by hand, next to the code it describes (worker/web/api.py), which checks
its input with the patterns and limits defined here. The API tests check every
answer they get against it, and tests/test_api_schema.py sends requests generated
from it: what it calls valid is never refused as invalid, and what it calls invalid
always is.

JSON Schema cannot tell 7 from 7.0, nor say how a number is written in a query
string; the descriptions say it: ids, `limit` and the body's integers are written
as integer literals (7, never 7.0, "7" or true), `wait` as a decimal number (5, 0.5,
1e-3).
"""

from __future__ import annotations

from typing import Any

from models import Outcome, Requester, RequestState, TeamStatus
from models.integration import BASE_URL_MAX, BIGINT_MAX, INTEGER_MAX, TEAM_ID_MAX, TEAM_ID_PATTERN
from worker.cursors import CURSOR_MAX, CURSOR_PATTERN, DEFAULT_PAGE, MAX_PAGE
from worker.platforms import PLATFORMS
from worker.platforms.opsgenie import OPSGENIE_END_OF_SUPPORT
from worker.web.inputs import (
    BASE_URL_PATTERN,
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
)

ERROR_CODES = {
    "malformed_request": "400: not well-formed HTTP (a bad or over-long request line or "
    "header, a body whose framing or Content-Encoding is broken); nothing of it is repeated",
    "malformed_json": "400: the body is not JSON",
    "unauthorized": "401: no bearer token, or the wrong one",
    "not_found": "404: no such request, team, organization or route",
    "method_not_allowed": "405: the route exists, not with that method",
    "idempotency_conflict": "409: the Idempotency-Key was used for another team",
    "too_large": "413: the body is over the size limit",
    "unsupported_media_type": "415: the body is not application/json",
    "invalid_request": "422: a field, header or query parameter is missing or of the wrong type",
    "internal_error": "500: a bug; logged as `api.unhandled`, never with the request body",
    "database_unavailable": "503: the database could not be reached; retry",
    "broker_unavailable": "503: recorded, but not published yet (the outbox will); retry",
    "busy": "503: the request could not be recorded this time; retry",
    "shared_state_unavailable": "503: the workers' shared Redis could not be reached; retry",
}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema["type"]
    out = {**schema, "type": [kind, "null"]}
    if "enum" in schema:
        out["enum"] = [*schema["enum"], None]
    return out


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
        404: "NotFound",
        409: "IdempotencyConflict",
        413: "TooLarge",
        415: "UnsupportedMediaType",
        422: "InvalidRequest",
        500: "InternalError",
        503: "Unavailable",
    }
    return {str(s): {"$ref": f"#/components/responses/{names[s]}"} for s in statuses}


def _request_schema() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "description": "A validation request: one check of one team's key.",
        "required": [
            "id",
            "organization_id",
            "integration_id",
            "team_id",
            "requested_by",
            "state",
            "outcome",
            "message",
            "http_status",
            "error_code",
            "works_on",
            "rate_limit_state",
            "rate_limit_reason",
            "attempts",
            "created_at",
            "finished_at",
            "confirmation",
        ],
        "additionalProperties": False,
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "organization_id": {"type": "integer"},
            "integration_id": {"type": "integer"},
            "team_id": {"type": "string"},
            "requested_by": {"type": "string", "enum": [r.value for r in Requester]},
            "state": {
                "type": "string",
                "enum": [s.value for s in RequestState],
                "description": "`confirming`: a failing verdict about a valid team's key waits "
                "for a second check (OGV_CONFIRM_AFTER seconds later) before the team's status "
                "changes; the request is not finished yet.",
            },
            "outcome": _nullable(
                {
                    "type": "string",
                    "enum": [o.value for o in Outcome],
                    "description": "Set once the state is done or failed (see the README).",
                }
            ),
            "message": _nullable({"type": "string"}),
            "http_status": _nullable({"type": "integer"}),
            "error_code": _nullable(
                {
                    "type": "string",
                    "description": "Why it failed or was refused: e.g. unrecognised_answer, "
                    "malformed_key, throttled, timeout.",
                }
            ),
            "works_on": {
                "type": "array",
                "items": {"type": "string", "enum": list(PLATFORMS)},
                "description": "Other platforms where the key works, when it turned invalid.",
            },
            "rate_limit_state": _nullable({"type": "string"}),
            "rate_limit_reason": _nullable({"type": "string"}),
            "attempts": {"type": "integer", "minimum": 0},
            "created_at": timestamp,
            "finished_at": _nullable(timestamp),
            "confirmation": _nullable(
                {
                    "type": "string",
                    "enum": ["confirmed", "disagreed"],
                    "description": "Whether the second check of a failing verdict agreed; "
                    "null when none ran.",
                }
            ),
        },
    }


def _team_schema() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    return {
        "type": "object",
        "description": "A team and what is known of its key (never the key itself).",
        "required": [
            "team_id",
            "organization_id",
            "integration_id",
            "account",
            "platform",
            "probe",
            "label",
            "status",
            "status_changed_at",
            "last_checked_at",
            "last_error_code",
            "last_http_status",
            "works_on",
            "jsm_ops",
            "jsm_ops_checked_at",
        ],
        "additionalProperties": False,
        "properties": {
            "team_id": {"type": "string"},
            "organization_id": {"type": "integer"},
            "integration_id": {"type": "integer"},
            "account": {"type": "string"},
            "platform": {"type": "string", "enum": list(PLATFORMS)},
            "probe": {"type": "string", "enum": ["authenticate", "alerts"]},
            "label": {"type": "string"},
            "status": {"type": "string", "enum": [s.value for s in TeamStatus]},
            "status_changed_at": _nullable(timestamp),
            "last_checked_at": _nullable(timestamp),
            "last_error_code": _nullable({"type": "string"}),
            "last_http_status": _nullable({"type": "integer"}),
            "works_on": {
                "type": "array",
                "items": {"type": "string", "enum": list(PLATFORMS)},
                "description": "Other platforms where the key works, found when it turned "
                "invalid here.",
            },
            "jsm_ops": _nullable(
                {
                    "type": "string",
                    "enum": ["works", "fails", "unknown"],
                    "description": "Whether the key works on JSM Operations, as last probed "
                    "(`ogv migration report`); null: never probed.",
                }
            ),
            "jsm_ops_checked_at": _nullable(timestamp),
        },
    }


def _counts(description: str) -> dict[str, Any]:
    """`teams`, `works`, `fails` and `unknown`: teams on Opsgenie by what JSM Ops said."""
    count = {"type": "integer", "minimum": 0}
    return {
        "teams": {**count, "description": description},
        "works": {**count, "description": "Keys JSM Operations accepted (a genuine `valid`)."},
        "fails": {**count, "description": "Keys JSM Operations refused (another genuine answer)."},
        "unknown": {
            **count,
            "description": "Keys never probed, or whose last probe got no genuine answer.",
        },
    }


def _migration_schemas() -> dict[str, Any]:
    days = {
        "type": "integer",
        "minimum": 0,
        "description": "Whole days (UTC) until Opsgenie's end of support; 0 once passed.",
    }
    return {
        "MigrationReport": {
            "type": "object",
            "description": "Readiness for JSM Operations, as the last probes recorded it "
            "(`ogv migration report` probes; `OGV_MIGRATION_PROBE=on` adds a probe to checks).",
            "required": ["end_of_support", "days_left", "organizations", "integrations"],
            "additionalProperties": False,
            "properties": {
                "end_of_support": {
                    "type": "string",
                    "format": "date",
                    "const": OPSGENIE_END_OF_SUPPORT.isoformat(),
                },
                "days_left": days,
                "organizations": {"type": "array", "items": _ref("OrganizationReadiness")},
                "integrations": {
                    "type": "array",
                    "items": _ref("IntegrationReadiness"),
                    "description": "The organization's integrations on Opsgenie platforms, "
                    "by id, each counting the teams of every organization linked to it.",
                },
                "probed": {
                    "type": "object",
                    "description": "`ogv migration report --json` only: this run's probes.",
                    "required": ["teams", "works", "fails", "unknown"],
                    "additionalProperties": False,
                    "properties": _counts("Teams asked about."),
                },
            },
        },
        "OrganizationReadiness": {
            "type": "object",
            "required": ["organization_id", "teams", "works", "fails", "unknown", "days_left"],
            "additionalProperties": False,
            "properties": {
                "organization_id": {"type": "integer"},
                **_counts("Teams of its active integrations on Opsgenie (US or EU)."),
                "days_left": days,
            },
        },
        "IntegrationReadiness": {
            "type": "object",
            "required": [
                "integration_id",
                "account",
                "platform",
                "teams",
                "works",
                "fails",
                "unknown",
                "ready",
            ],
            "additionalProperties": False,
            "properties": {
                "integration_id": {"type": "integer"},
                "account": {"type": "string"},
                "platform": {
                    "type": "string",
                    "enum": [n for n, p in PLATFORMS.items() if p.is_opsgenie],
                },
                **_counts("Teams of every active organization linked to it."),
                "ready": {
                    "type": "boolean",
                    "description": "Every team works on JSM Operations: `ogv integration "
                    "migrate` moves it without --force.",
                },
            },
        },
    }


def _guard_schemas() -> dict[str, Any]:
    timestamp = {"type": "string", "format": "date-time"}
    count = {"type": "integer", "minimum": 0}
    statuses = [s.value for s in TeamStatus]
    return {
        "Guard": {
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
        },
        "BaseUrlGuard": {
            "type": "object",
            "required": [
                "base_url",
                "tripped",
                "tripped_at",
                "checks",
                "changes",
                "accounts",
                "trips",
                "held",
            ],
            "additionalProperties": False,
            "properties": {
                "base_url": {"type": "string"},
                "tripped": {
                    "type": "boolean",
                    "description": "Changes from valid to failing are held now.",
                },
                "tripped_at": _nullable({**timestamp, "description": "Set while tripped."}),
                "checks": {**count, "description": "Checks of valid teams in the window."},
                "changes": {
                    **count,
                    "description": "Changes from valid to failing in the window, held ones "
                    "included.",
                },
                "accounts": {
                    **count,
                    "description": "Accounts among those changes, as far as the guard tells "
                    "them apart: it keeps three per tenth of the window, and needs three to trip.",
                },
                "trips": {**count, "description": "Times the guard tripped."},
                "held": {**count, "description": "Changes held now."},
            },
        },
        "HeldChange": {
            "type": "object",
            "description": "A change from valid to a failing status that the guard held: the "
            "team kept its status. Never the key.",
            "required": [
                "team_id",
                "label",
                "organization_id",
                "integration_id",
                "account",
                "base_url",
                "old_status",
                "new_status",
                "http_status",
                "error_code",
                "message",
                "held_at",
                "rechecked_at",
            ],
            "additionalProperties": False,
            "properties": {
                "team_id": {"type": "string"},
                "label": {"type": "string"},
                "organization_id": {"type": "integer"},
                "integration_id": {"type": "integer"},
                "account": {"type": "string"},
                "base_url": {"type": "string"},
                "old_status": {"type": "string", "enum": statuses},
                "new_status": {"type": "string", "enum": statuses},
                "http_status": _nullable({"type": "integer"}),
                "error_code": _nullable({"type": "string"}),
                "message": _nullable({"type": "string"}),
                "held_at": timestamp,
                "rechecked_at": _nullable(
                    {**timestamp, "description": "When beat last asked to check it again."}
                ),
            },
        },
        "HeldPage": {
            "type": "object",
            "required": ["held", "next_cursor"],
            "additionalProperties": False,
            "properties": {
                "held": {"type": "array", "items": _ref("HeldChange")},
                "next_cursor": _nullable(
                    {"type": "string", "description": "Pass as `cursor`; null on the last page."}
                ),
            },
        },
    }


INTEGER_LITERAL = 'An integer literal: 7, never 7.0, "7" or true.'


def team_id_schema(more: str) -> dict[str, Any]:
    """A team id as the API takes it, in a body or a path; `more` ends the description."""
    return {
        "type": "string",
        "minLength": 3,
        "maxLength": TEAM_ID_MAX,
        "pattern": TEAM_ID_PATTERN,
        "description": "`<organization_integration_id>-<label>`, as `ogv team add` printed "
        "it: the label has no control character and no space at either end. Anything else "
        "is refused (422) and never repeated: it may be a key pasted into the wrong field. " + more,
    }


def _validation_input() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["organization_id", "integration_id", "team_id"],
        "additionalProperties": False,
        "properties": {
            "organization_id": {
                "type": "integer",
                "minimum": 1,
                "maximum": BIGINT_MAX,
                "description": INTEGER_LITERAL,
            },
            "integration_id": {
                "type": "integer",
                "minimum": 1,
                "maximum": INTEGER_MAX,
                "description": INTEGER_LITERAL,
            },
            "team_id": team_id_schema(
                "A well-formed id of no team of that integration is not refused: the request "
                "ends with the outcome `invalid_team`."
            ),
        },
    }


def _schemas() -> dict[str, Any]:
    return {
        **_migration_schemas(),
        **_guard_schemas(),
        "ValidationInput": _validation_input(),
        "ValidationRequest": _request_schema(),
        "Team": _team_schema(),
        "TeamPage": {
            "type": "object",
            "required": ["teams", "next_cursor"],
            "additionalProperties": False,
            "properties": {
                "teams": {"type": "array", "items": _ref("Team")},
                "next_cursor": _nullable(
                    {"type": "string", "description": "Pass as `cursor`; null on the last page."}
                ),
            },
        },
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
        "NotFound": _error_response("`not_found`: no such resource."),
        "IdempotencyConflict": _error_response(
            "`idempotency_conflict`: the Idempotency-Key was used for another team."
        ),
        "TooLarge": _error_response("`too_large`: the body is over 16 KiB."),
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
            }
        },
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
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of OGV_API_TOKEN.",
                }
            },
            "schemas": _schemas(),
            "responses": _responses(),
        },
    }
