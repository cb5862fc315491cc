"""The OpenAPI operations of the front door: an organization's integrations, and the
teams' keys (store, replace, remove). `worker.web.openapi_paths` puts them with the
other routes; every one of them is the `manage` scope's but the reads."""

from __future__ import annotations

from typing import Any

from models import IntegrationStatus
from worker.web.inputs import DIGITS_PATTERN
from worker.web.openapi_parts import (
    body,
    bounds_parameters,
    errors,
    idempotency_key,
    integration_id,
    json_answer,
    organization_id,
    page_parameters,
    ref,
    team_id,
    wait,
)

NO_QUERY = "It takes no query parameter (422)."
MANAGE = "Needs the `manage` scope."
WRITE_ERRORS = (400, 401, 404, 413, 415, 422, 500, 503)
KEY_NOTE = (
    "The key travels in the body only; it is stored encrypted and never answered. A "
    "malformed key is refused (422) without being repeated."
)


def integrations_paths() -> dict[str, Any]:
    location = {"Location": {"description": "The integration's URL.", "schema": {"type": "string"}}}
    integration = json_answer(ref("Integration"), "The integration.")
    return {
        "/v1/organizations/{organization_id}/integrations": {
            "get": {
                "operationId": "listIntegrations",
                "summary": "An organization's integrations, by id, a page at a time",
                "description": "An organization without any has an empty page; one the "
                "token may not see answers 404. A query parameter not listed here, or one "
                "given twice, is refused (422).",
                "parameters": [
                    organization_id(),
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string", "enum": [s.value for s in IntegrationStatus]},
                    },
                    bounds_parameters()[0],
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
                    "200": json_answer(ref("IntegrationPage"), "One page of integrations."),
                    **errors(400, 401, 404, 422, 500, 503),
                },
            },
            "post": {
                "operationId": "addIntegration",
                "summary": "Install an Opsgenie or JSM Operations account for the organization",
                "description": "Installing an account the organization has installed already "
                f"enables it again (200). {MANAGE} {NO_QUERY}",
                "parameters": [organization_id(), idempotency_key("integration")],
                "requestBody": body("IntegrationInput"),
                "responses": {
                    "201": {**integration, "description": "Installed.", "headers": location},
                    "200": {
                        **integration,
                        "description": "Installed already, or the Idempotency-Key's integration.",
                        "headers": location,
                    },
                    **errors(409, *WRITE_ERRORS),
                },
            },
        },
        "/v1/organizations/{organization_id}/integrations/{integration_id}": {
            "get": {
                "operationId": "getIntegration",
                "summary": "One of the organization's integrations",
                "description": NO_QUERY,
                "parameters": [organization_id(), integration_id()],
                "responses": {"200": integration, **errors(400, 401, 404, 422, 500, 503)},
            },
            "patch": {
                "operationId": "changeIntegration",
                "summary": "Disable the integration, or enable it again",
                "description": "While it is disabled, checks of its teams end "
                f"`invalid_integration` and beat does not re-check them. {MANAGE} {NO_QUERY}",
                "parameters": [organization_id(), integration_id()],
                "requestBody": body("IntegrationChange"),
                "responses": {"200": integration, **errors(*WRITE_ERRORS)},
            },
            "delete": {
                "operationId": "removeIntegration",
                "summary": "Remove the integration from the organization, with its teams",
                "description": "Their open checks end (`integration_removed`); their status "
                "history stays until OGV_HISTORY_RETENTION_DAYS prunes it. "
                f"{MANAGE} {NO_QUERY}",
                "parameters": [organization_id(), integration_id()],
                "responses": {
                    "200": json_answer(ref("RemovedIntegration"), "Removed."),
                    **errors(400, 401, 404, 422, 500, 503),
                },
            },
        },
        "/v1/organizations/{organization_id}/integrations/{integration_id}/teams": {
            "get": {
                "operationId": "listIntegrationTeams",
                "summary": "An integration's teams, by team id, a page at a time",
                "description": "A query parameter not listed here, or one given twice, is "
                "refused (422).",
                "parameters": [organization_id(), integration_id(), *page_parameters()],
                "responses": {
                    "200": json_answer(ref("TeamPage"), "One page of teams."),
                    **errors(400, 401, 404, 422, 500, 503),
                },
            },
            "post": {
                "operationId": "addTeam",
                "summary": "Store a team's key, and ask for a check of it at once",
                "description": f"{KEY_NOTE} The answer holds the team and its check: with "
                "`wait`, the check's outcome if it came in time (a new key is never "
                f"`confirming`). {MANAGE} A query parameter other than `wait` is refused (422).",
                "parameters": [
                    organization_id(),
                    integration_id(),
                    wait(),
                    idempotency_key("team and its first check"),
                ],
                "requestBody": body("TeamInput"),
                "responses": {
                    "201": {
                        **json_answer(ref("SavedTeam"), "Stored, and its check asked for."),
                        "headers": {
                            "Location": {
                                "description": "The team's URL (`/v1/teams/{team_id}`).",
                                "schema": {"type": "string"},
                            }
                        },
                    },
                    "200": json_answer(
                        ref("SavedTeam"), "The Idempotency-Key's team and its check."
                    ),
                    **errors(409, *WRITE_ERRORS),
                },
            },
        },
    }


def team_paths() -> dict[str, Any]:
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
                "parameters": [team_id(), wait()],
                "requestBody": body("KeyInput"),
                "responses": {
                    "200": json_answer(ref("SavedTeam"), "Replaced, and its check asked for."),
                    **errors(*WRITE_ERRORS),
                },
            }
        },
    }


def remove_team() -> dict[str, Any]:
    """`DELETE /v1/teams/{team_id}` (its `GET` is in `openapi_paths`)."""
    return {
        "operationId": "removeTeam",
        "summary": "Remove a team and its key",
        "description": "Its open checks end (`team_removed`); its status history stays "
        f"until OGV_HISTORY_RETENTION_DAYS prunes it. {MANAGE} {NO_QUERY}",
        "parameters": [team_id()],
        "responses": {
            "200": json_answer(ref("RemovedTeam"), "Removed."),
            **errors(400, 401, 404, 422, 500, 503),
        },
    }
