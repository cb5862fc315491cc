"""The paths of the OpenAPI document (`worker.web.openapi`): every route's operation,
its parameters and answers. The front door's (integrations, and the teams' keys) are
in `worker.web.openapi_inventory`; each operation's scope is added from
`worker.web.scopes`."""

from __future__ import annotations

from typing import Any

from models.integration import BASE_URL_MAX, IDEMPOTENCY_KEY_MAX
from worker import audit
from worker.web.inputs import (
    BASE_URL_PATTERN,
    DIGITS_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    SINCE_PATTERN,
)
from worker.web.openapi_inventory import integrations_paths, remove_team, team_paths
from worker.web.openapi_parts import (
    bounds_parameters,
    errors,
    json_answer,
    organization_id,
    page_parameters,
    ref,
)
from worker.web.schemas import team_id_schema


def post_validations() -> dict[str, Any]:
    request = json_answer(ref("ValidationRequest"), "")
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
            "content": {"application/json": {"schema": ref("ValidationInput")}},
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
            **errors(400, 401, 409, 413, 415, 422, 500, 503),
        },
    }


def list_audit() -> dict[str, Any]:
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "description": description, "schema": schema}

    return {
        "operationId": "listAuditEvents",
        "summary": "The audit log: who did what, to which organization and target, newest first",
        "description": "Operators' (`cli:<os user>`) and callers' (`token:<name>`) actions, "
        "as `ogv audit list` shows them. A token limited to some organizations reads only "
        "their events. A query parameter not listed here, or one given twice, is refused (422).",
        "parameters": [
            {**organization_id(), "in": "query", "required": False},
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
            "200": json_answer(ref("AuditPage"), "One page of events, newest first."),
            **errors(400, 401, 422, 500, 503),
        },
    }


def paths() -> dict[str, Any]:
    public: list[dict[str, Any]] = []
    return {
        "/v1/validations": {"post": post_validations()},
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
                    "200": json_answer(ref("ValidationRequest"), "The request."),
                    **errors(400, 401, 404, 410, 500, 503),
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
                    "200": json_answer(ref("Team"), "The team."),
                    **errors(400, 401, 404, 422, 500, 503),
                },
            },
            "delete": remove_team(),
        },
        **team_paths(),
        "/v1/organizations/{organization_id}/teams": {
            "get": {
                "operationId": "listTeams",
                "summary": "An organization's teams, by team id, a page at a time",
                "description": "A query parameter not listed here, or one given twice, is "
                "refused (422).",
                "parameters": [organization_id(), *page_parameters()],
                "responses": {
                    "200": json_answer(ref("TeamPage"), "One page of teams."),
                    **errors(400, 401, 404, 422, 500, 503),
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
                "parameters": [organization_id()],
                "responses": {
                    "200": json_answer(ref("MigrationReport"), "The organization's report."),
                    **errors(400, 401, 404, 422, 500, 503),
                },
            }
        },
        **integrations_paths(),
        "/v1/guard": {
            "get": {
                "operationId": "getGuard",
                "summary": "Each base URL's mass-change guard, and the changes it holds",
                "description": "Whether the guard of each base URL is tripped, its current "
                "window, and how many changes it holds (`ogv changes list`). It takes no query "
                "parameter (422). The windows count every organization's checks, so a token "
                "limited to some organizations is refused (403): `GET /v1/changes/held` lists "
                "its own held changes.",
                "responses": {
                    "200": json_answer(ref("Guard"), "Every base URL counted or holding changes."),
                    **errors(400, 401, 422, 500, 503),
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
                    *bounds_parameters(),
                ],
                "responses": {
                    "200": json_answer(ref("HeldPage"), "One page of held changes."),
                    **errors(400, 401, 422, 500, 503),
                },
            }
        },
        "/v1/audit": {"get": list_audit()},
        "/v1/openapi.json": {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "security": public,
                "responses": {
                    "200": json_answer({"type": "object"}, "The OpenAPI document."),
                    **errors(400),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Whether the database and the broker are reachable",
                "security": public,
                "responses": {
                    "200": json_answer(ref("Health"), "Both are reachable."),
                    **errors(400),
                    "503": json_answer(ref("Health"), "At least one is not."),
                },
            }
        },
    }
