"""Every route of the API, with the scope a caller needs for it: the one place that says so.

    public    no token: the document and the health check
    read      the GET routes of teams, validations, integrations and organizations
    validate  asking for checks
    operate   the mass-change guard and the changes it holds
    manage    writes to integrations and teams

`build_app` adds the routes in this order; authentication looks a request's scope up
by its handler (`scope_of`). A route whose path holds a team id takes any character
there (`[\\s\\S]+`, "/" and "\\n" included), so that a malformed id is refused by its
handler (422) rather than left to fall through to "no such route"; organization and
integration ids take anything but "/", for the same reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from aiohttp import web

from worker.web import handlers

Scope = Literal["public", "read", "validate", "operate", "manage"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ORG = "/v1/organizations/{organization_id:[^/]+}"
_INTEGRATION = _ORG + "/integrations/{integration_id:[^/]+}"
_TEAM = r"/v1/teams/{team_id:[\s\S]+}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    scope: Scope
    name: str | None = None


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/validations", handlers.post_validation, "validate"),
    Route("GET", "/v1/validations/{request_id}", handlers.get_validation, "read", "validation"),
    # One resource per path: the methods of a path are added one after another.
    Route("GET", _TEAM, handlers.get_team, "read", "team"),
    Route("DELETE", _TEAM, handlers.delete_team, "manage", "team"),
    Route("PUT", _TEAM + "/key", handlers.put_key, "manage"),
    Route("GET", _ORG + "/teams", handlers.list_teams, "read"),
    Route("GET", _ORG + "/migration", handlers.get_migration, "read"),
    Route("GET", _ORG + "/integrations", handlers.list_integrations, "read", "integrations"),
    Route("POST", _ORG + "/integrations", handlers.post_integration, "manage", "integrations"),
    Route("GET", _INTEGRATION, handlers.get_integration, "read", "integration"),
    Route("PATCH", _INTEGRATION, handlers.patch_integration, "manage", "integration"),
    Route("DELETE", _INTEGRATION, handlers.delete_integration, "manage", "integration"),
    Route("GET", _INTEGRATION + "/teams", handlers.list_integration_teams, "read", "teams"),
    Route("POST", _INTEGRATION + "/teams", handlers.post_team, "manage", "teams"),
    Route("GET", "/v1/guard", handlers.get_guard, "operate"),
    Route("GET", "/v1/changes/held", handlers.list_held, "operate"),
    Route("GET", "/v1/openapi.json", handlers.get_openapi, "public"),
    Route("GET", "/healthz", handlers.healthz, "public"),
)

_SCOPES: dict[Handler, Scope] = {route.handler: route.scope for route in ROUTES}


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.method == "GET":  # and HEAD, as aiohttp adds it
            app.router.add_get(route.path, route.handler, name=route.name)
        else:
            app.router.add_route(route.method, route.path, route.handler, name=route.name)


def scope_of(request: web.Request) -> Scope | None:
    """The scope the request's route needs; None for no route (a 404 or 405 answers it)."""
    return _SCOPES.get(request.match_info.handler)
