"""Every route of the API and its handler, in the order `build_app` adds them.

The scope each route needs is in `worker/web/scopes.py` (`ROUTE_SCOPES`, the one
table of scopes); `tests/web/test_scoped_api.py` checks that every route here but
the public ones has an entry there. A route whose path holds a team id takes any
character there (`[\\s\\S]+`, "/" and "\\n" included), so that a malformed id is
refused by its handler (422) rather than left to fall through to "no such route";
organization and integration ids take anything but "/" (not aiohttp's default
`[^{}/]+`: an id with a brace is refused by its handler too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from worker.web import handlers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_ORG = "/v1/organizations/{organization_id:[^/]+}"
_INTEGRATION = _ORG + "/integrations/{integration_id:[^/]+}"
_TEAM = r"/v1/teams/{team_id:[\s\S]+}"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    name: str | None = None


ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/validations", handlers.post_validation),
    Route("GET", "/v1/validations/{request_id}", handlers.get_validation, "validation"),
    # One resource per path: the methods of a path are added one after another.
    Route("GET", _TEAM, handlers.get_team, "team"),
    Route("DELETE", _TEAM, handlers.delete_team, "team"),
    Route("PUT", _TEAM + "/key", handlers.put_key),
    Route("GET", _ORG + "/teams", handlers.list_teams),
    Route("GET", _ORG + "/migration", handlers.get_migration),
    Route("GET", _ORG + "/integrations", handlers.list_integrations, "integrations"),
    Route("POST", _ORG + "/integrations", handlers.post_integration, "integrations"),
    Route("GET", _INTEGRATION, handlers.get_integration, "integration"),
    Route("PATCH", _INTEGRATION, handlers.patch_integration, "integration"),
    Route("DELETE", _INTEGRATION, handlers.delete_integration, "integration"),
    Route("GET", _INTEGRATION + "/teams", handlers.list_integration_teams, "teams"),
    Route("POST", _INTEGRATION + "/teams", handlers.post_team, "teams"),
    Route("GET", "/v1/guard", handlers.get_guard),
    Route("GET", "/v1/changes/held", handlers.list_held),
    Route("GET", "/v1/audit", handlers.list_audit),
    Route("GET", "/v1/openapi.json", handlers.get_openapi),
    Route("GET", "/healthz", handlers.healthz),
)


def add_routes(app: web.Application) -> None:
    for route in ROUTES:
        if route.method == "GET":  # and HEAD, as aiohttp adds it
            app.router.add_get(route.path, route.handler, name=route.name)
        else:
            app.router.add_route(route.method, route.path, route.handler, name=route.name)
