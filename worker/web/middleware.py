"""The API's middleware, outermost first: the access log, the error shape, authentication.

Every refusal and every bug is answered `{"error": {"code", "message"}}`; a bug is
logged as `api.unhandled` by method and route, never with the body. Each request is
logged once, as `api.request` (`log_request`), never with a header, and a refused
one without its path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from worker.access import LOCAL, Caller
from worker.web.answers import error_response
from worker.web.config import CONFIG, VERIFIER
from worker.web.errors import ApiError, off_loop
from worker.web.inputs import BODY_LIMIT
from worker.web.scopes import CALLER, forbidden, route_scope

log = logging.getLogger("ogv.api")

PUBLIC_PATHS = frozenset({"/healthz", "/v1/openapi.json"})
# Logged as sent; any other method is logged as OTHER (a parser may take any token).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_HTTP_CODES = {
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "that method is not allowed here"),
    413: ("too_large", f"the body is over {BODY_LIMIT} bytes"),
}


def _from_http_exception(exc: web.HTTPException) -> ApiError:
    code, message = _HTTP_CODES.get(exc.status, ("invalid_request", "the request was refused"))
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return ApiError(exc.status, code, message, headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal and every bug becomes the JSON error shape; never a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(_from_http_exception(exc))
    except Exception:
        # Method and route only: the body and query may hold what a key looks like.
        log.exception(
            "api.unhandled", extra={"method": request.method, "route": _route_name(request)}
        )
        return error_response(ApiError(500, "internal_error", "an unexpected error; it is logged"))


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


# -- the access log ----------------------------------------------------------------------


def log_request(request: web.Request, status: int, started: float) -> None:
    """Write the request's access-log line: `api.request` with method, route, path, status, ms.

    `path` is there only when the request was answered (status below 400): its ids then
    name things that exist. A refused request is logged by its route alone, so a key
    sent where an id belongs (`/v1/teams/<key>`) never reaches the log. Neither the
    query string nor any header is ever logged.
    """
    log.info(
        "api.request",
        extra={
            "method": request.method if request.method in KNOWN_METHODS else "OTHER",
            "route": _route_name(request),
            "path": request.path if status < 400 else None,
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One `api.request` line per request the application handles, whatever its answer.

    499 (nginx's "client closed request") stands for a handler cancelled before it
    answered: only shutdown cancels one, since aiohttp lets handlers finish.
    """
    started = time.perf_counter()
    status = 499
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect, which errors_middleware lets through
        status = exc.status
        raise
    finally:
        log_request(request, status, started)


# -- authentication ----------------------------------------------------------------------


def _bearer(request: web.Request) -> bytes | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip().encode("utf-8", "surrogateescape")


async def identify(request: web.Request) -> Caller | None:
    """The caller a request's bearer token names (anyone, when the API needs no token),
    or None; for public routes that show more to a known caller."""
    if request.app[CONFIG].token is None:
        return LOCAL
    return await _caller_of(request)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is calling, and whether the route's scope is theirs (worker/web/scopes.py).

    A stored token's verdict comes from the verifier's cache when it is fresh, else
    from the database off the event loop. Without OGV_API_TOKEN (--insecure-local)
    every caller may do everything.
    """
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    if request.app[CONFIG].token is None:
        request[CALLER] = LOCAL
        return await handler(request)
    found = await _caller_of(request)
    if found is None:
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            {"WWW-Authenticate": 'Bearer realm="ogv"'},
        )
    scope = route_scope(request)
    if scope is not None and not found.allows(scope):
        raise forbidden(f"this route needs a token with the {scope.value} scope")
    request[CALLER] = found
    return await handler(request)


async def _caller_of(request: web.Request) -> Caller | None:
    given = _bearer(request)
    if given is None:
        return None
    verifier = request.app[VERIFIER]
    known = verifier.cached(given)
    if isinstance(known, Caller) or known is None:
        return known
    return await off_loop(lambda: verifier.verify(given))
