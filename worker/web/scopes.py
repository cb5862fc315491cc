"""Which scope each API route needs, who is calling, and how the document says so.

The scopes themselves, and what a token may do, live in `worker/access.py`; this is
the API's side: `ROUTE_SCOPES` (one entry per route, checked by the auth middleware
and published in the OpenAPI document as each operation's security requirement and
`x-scopes`), and the caller the middleware found (`caller`).

Every route added in `worker/web/routes.py` but the public ones has its entry here
(tests/web/test_scoped_api.py checks it): reads need `read`, checks `validate`, the
guard and the audit log `operate`, and the writes to integrations and teams `manage`.

A token limited to some organizations sees only them: another organization's
integrations, teams, requests and migration report answer 404 as if they did not
exist (writes to them too), and a check asked for one answers 403.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from worker.access import Caller, Scope
from worker.web.errors import ApiError

_ORG = "/v1/organizations/{organization_id}"
_INTEGRATIONS = _ORG + "/integrations"
_INTEGRATION = _INTEGRATIONS + "/{integration_id}"

ROUTE_SCOPES: dict[tuple[str, str], Scope] = {
    ("POST", "/v1/validations"): Scope.VALIDATE,
    ("GET", "/v1/validations/{request_id}"): Scope.READ,
    ("GET", "/v1/teams/{team_id}"): Scope.READ,
    ("DELETE", "/v1/teams/{team_id}"): Scope.MANAGE,
    ("PUT", "/v1/teams/{team_id}/key"): Scope.MANAGE,
    ("GET", _ORG + "/teams"): Scope.READ,
    ("GET", _ORG + "/migration"): Scope.READ,
    ("GET", _INTEGRATIONS): Scope.READ,
    ("POST", _INTEGRATIONS): Scope.MANAGE,
    ("GET", _INTEGRATION): Scope.READ,
    ("PATCH", _INTEGRATION): Scope.MANAGE,
    ("DELETE", _INTEGRATION): Scope.MANAGE,
    ("GET", _INTEGRATION + "/teams"): Scope.READ,
    ("POST", _INTEGRATION + "/teams"): Scope.MANAGE,
    ("GET", "/v1/guard"): Scope.OPERATE,
    ("GET", "/v1/changes/held"): Scope.OPERATE,
    ("GET", "/v1/audit"): Scope.OPERATE,
}
"""(method, path as the OpenAPI document writes it) → the scope a token needs."""

CALLER = web.RequestKey("caller", Caller)


def route_scope(request: web.Request) -> Scope | None:
    """The scope the matched route needs; None for no route (a 404 follows)."""
    resource = request.match_info.route.resource
    if resource is None:
        return None
    method = "GET" if request.method == "HEAD" else request.method
    return ROUTE_SCOPES.get((method, resource.canonical))


def caller(request: web.Request) -> Caller:
    """Who is calling (set by the auth middleware on every /v1 route)."""
    return request[CALLER]


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


def require_sees(request: web.Request, organization_id: int, answer: ApiError) -> None:
    """Refuse with `answer` (a 404, or a 403) an organization the token may not see."""
    if not caller(request).sees(organization_id):
        raise answer


def document_scopes(paths: dict[str, Any]) -> dict[str, Any]:
    """`paths` with each route's scope: a security requirement, `x-scopes`, and its 403."""
    for (method, path), scope in ROUTE_SCOPES.items():
        operation = paths[path][method.lower()]
        operation["security"] = [{"bearerAuth": [scope.value]}]
        operation["x-scopes"] = [scope.value]
        operation["responses"]["403"] = {"$ref": "#/components/responses/Forbidden"}
    return paths
