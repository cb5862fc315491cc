"""The API's middleware, outermost first: the access log, the error shape, authentication.

Every refusal and every bug is answered `{"error": {"code", "message"}}`; a bug is
logged as `api.unhandled` by method and route, never with the body. Each request is
logged once, as `api.request` (`log_request`), never with a header, and a refused
one without its path.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from worker.web.answers import error_response
from worker.web.config import CONFIG
from worker.web.errors import ApiError
from worker.web.inputs import BODY_LIMIT

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


def authenticated(request: web.Request) -> bool:
    """True when the request carries the API's token, or the API needs none."""
    expected = request.app[CONFIG].token
    if expected is None:
        return True
    given = _bearer(request)
    return given is not None and hmac.compare_digest(given, expected.encode())


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    if not authenticated(request):
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            {"WWW-Authenticate": 'Bearer realm="ogv"'},
        )
    return await handler(request)
