"""The HTTP API for web apps in any language: `ogv api`, aiohttp.web over `ValidationClient`.

    POST /v1/validations                       ask for a check (?wait=SECONDS, Idempotency-Key)
    GET  /v1/validations/{request_id}          a request's state and outcome
    GET  /v1/teams/{team_id}                   a team's status
    GET  /v1/organizations/{org}/teams         an organization's teams (?status, limit, cursor)
    GET  /v1/organizations/{org}/migration     its readiness for JSM Ops, as recorded
    GET  /v1/guard                             each base URL's mass-change guard, held counts
    GET  /v1/changes/held                      the changes it holds (?base_url, limit, cursor)
    GET  /v1/openapi.json                      the OpenAPI document (worker/web/openapi.py)
    GET  /healthz                              database and broker reachable

Every /v1 route but the document needs `Authorization: Bearer $OGV_API_TOKEN`.
Refused input is answered `{"error": {"code", "message"}}` by raising `ApiError`;
the codes are listed in `worker.web.openapi.ERROR_CODES`. Messages never echo input
(it could be a key pasted into the wrong field), and a bug is answered with a
generic 500, logged as `api.unhandled` without the body. Input is checked with the
patterns and limits the OpenAPI document publishes, so the two say the same.

A request aiohttp's HTTP parser cannot read never reaches the application: aiohttp
answers it itself, quoting the offending line (an API token, say) in the answer and
in its ERROR log. `ApiRequestHandler` answers it `malformed_request` instead, and
logs the exception's class only; `ApiRunner` serves the application with it.

Each request is logged once, as `api.request` with method, route, path, status and
ms (`log_request`); never a header, and a refused request without its path.

The database is reached through SQLAlchemy's sync API on a thread pool, so the
event loop is never blocked; `?wait` polls from the loop with `asyncio.sleep`
instead of holding a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hmac
import json
import logging
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from multidict import MultiMapping
from sqlalchemy import text

from models import TeamStatus
from models.integration import BIGINT_MAX, INTEGER_MAX, TEAM_ID_MAX, TEAM_ID_PATTERN
from worker import cursors, readiness
from worker.checks import guard, held
from worker.checks.requests import Ask, IdempotencyConflict
from worker.enqueue import RequestView
from worker.errors import RecordError
from worker.logs import configure_logging
from worker.settings import Settings
from worker.web import teams
from worker.web.client import ValidationClient
from worker.web.errors import ApiError, off_loop
from worker.web.grouping import Gatherer
from worker.web.openapi import (
    BASE_URL_MAX,
    BASE_URL_PATTERN,
    DECIMAL_PATTERN,
    DIGITS_PATTERN,
    IDEMPOTENCY_KEY_MAX,
    IDEMPOTENCY_KEY_PATTERN,
    document,
)
from worker.web.teams import TeamRow

log = logging.getLogger("ogv.api")

BODY_LIMIT = 16 * 1024
THREADS = 16  # at most OGV_DATABASE_POOL_SIZE (20), or connections are opened and closed
FIRST_POLL = 0.02
MAX_POLL = 0.25
HEALTH_TIMEOUT = 3  # seconds
KEEPALIVE_TIMEOUT = 75  # seconds; what web.run_app uses
PUBLIC_PATHS = frozenset({"/healthz", "/v1/openapi.json"})
LOCAL_HOSTS = frozenset({"127.0.0.1", "::1"})
# Logged as sent; any other method is logged as OTHER (a parser may take any token).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_TEAM_ID = re.compile(TEAM_ID_PATTERN)
_IDEMPOTENCY_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)
_DECIMAL = re.compile(DECIMAL_PATTERN)
_DIGITS = re.compile(DIGITS_PATTERN)
_BASE_URL = re.compile(BASE_URL_PATTERN)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")


class StartRefused(RuntimeError):
    """Raised when `ogv api` will not start as asked (no token, or insecure and public)."""

    code = "refused"


@dataclass(frozen=True)
class ApiConfig:
    """What the handlers need besides the client: the token (None: no auth) and limits."""

    token: str | None
    max_wait: float
    group_spacing: float = 0.0
    """Seconds a group of POSTs may fill after the one before it began (`Gatherer`)."""
    guard_windows: guard.Windows = field(default_factory=guard.DatabaseWindows)
    """Where the mass-change guard's windows are read (`guard.windows_for`)."""
    guard_thresholds: guard.Thresholds = field(default_factory=guard.Thresholds)


CLIENT = web.AppKey("client", ValidationClient)
CONFIG = web.AppKey("config", ApiConfig)
OPENAPI = web.AppKey("openapi", bytes)


# -- answers -------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def to_json(record: Any) -> dict[str, Any]:
    """A `RequestView` or `TeamRow` as the API shows it (the documented schemas)."""
    return {k: _jsonable(v) for k, v in dataclasses.asdict(record).items()}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(
        data, status=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def error_response(error: ApiError) -> web.Response:
    body = {"error": {"code": error.code, "message": error.message}}
    return json_response(body, error.status, error.headers)


_HTTP_CODES = {
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "that method is not allowed here"),
    413: ("too_large", f"the body is over {BODY_LIMIT} bytes"),
}


def malformed() -> ApiError:
    """The refusal of a request that is not well-formed HTTP; its message quotes nothing."""
    return ApiError(
        400, "malformed_request", "the request is not well-formed HTTP; nothing of it is repeated"
    )


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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    expected = request.app[CONFIG].token
    if expected is None or request.path in PUBLIC_PATHS:
        return await handler(request)
    given = _bearer(request)
    if given is None or not hmac.compare_digest(given, expected.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "a valid bearer token is required",
            {"WWW-Authenticate": 'Bearer realm="ogv"'},
        )
    return await handler(request)


# -- input -------------------------------------------------------------------------------


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


@dataclass(frozen=True)
class Submission:
    """A validated `POST /v1/validations` body."""

    organization_id: int
    integration_id: int
    team_id: str


def _int_field(body: Mapping[str, Any], name: str, maximum: int) -> int:
    value = body.get(name)
    if type(value) is not int or not 1 <= value <= maximum:
        raise invalid(f"{name} must be an integer from 1 to {maximum}")
    return value


def is_team_id(value: object) -> TypeGuard[str]:
    """Whether `value` is a team id as the document defines it (`TEAM_ID_PATTERN`)."""
    return (
        isinstance(value, str)
        and len(value) <= TEAM_ID_MAX
        and _TEAM_ID.fullmatch(value) is not None
    )


def bad_team_id() -> ApiError:
    # Never the value: a key pasted into the field must not come back, here or in a log.
    return invalid(
        "team_id must be <organization_integration_id>-<label>, at most "
        f"{TEAM_ID_MAX} characters, as `ogv team add` printed it"
    )


def parse_submission(body: Any) -> Submission:
    """The body's three fields, each exactly as the document's `ValidationInput` says."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    fields = {"organization_id", "integration_id", "team_id"}
    if set(body) - fields:
        raise invalid("unknown fields; the fields are organization_id, integration_id, team_id")
    team_id = body.get("team_id")
    if not is_team_id(team_id):
        raise bad_team_id()
    return Submission(
        organization_id=_int_field(body, "organization_id", BIGINT_MAX),
        integration_id=_int_field(body, "integration_id", INTEGER_MAX),
        team_id=team_id,
    )


def _only(query: MultiMapping[str], allowed: set[str]) -> None:
    if set(query) - allowed:
        raise invalid(f"unknown query parameters; allowed: {', '.join(sorted(allowed))}")
    for name in allowed:
        if len(query.getall(name, [])) > 1:
            raise invalid(f"{name} is given more than once")


def parse_wait(query: MultiMapping[str], cap: float) -> float:
    """`?wait=SECONDS`: 0 when absent, at most `cap`; written as `DECIMAL_PATTERN` says.

    Not float() alone: it also reads " 1", "1_0", "inf" and Arabic-Indic digits, which
    the document does not call numbers. A literal too large for a float (1e999) is
    simply over `cap`.
    """
    _only(query, {"wait"})
    raw = query.get("wait")
    if raw is None:
        return 0.0
    if not _DECIMAL.fullmatch(raw):
        raise invalid("wait must be a number of seconds, such as 5 or 0.5")
    return min(float(raw), cap)


def parse_idempotency_key(request: web.Request) -> str | None:
    """The header's one value, printable ASCII of 1 to `IDEMPOTENCY_KEY_MAX` characters."""
    keys = request.headers.getall("Idempotency-Key", [])
    if not keys:
        return None
    key = keys[0]
    if len(keys) > 1 or len(key) > IDEMPOTENCY_KEY_MAX or not _IDEMPOTENCY_KEY.fullmatch(key):
        raise invalid(
            f"Idempotency-Key must be one value of 1 to {IDEMPOTENCY_KEY_MAX} printable "
            "ASCII characters"
        )
    return key


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", f"the body is over {BODY_LIMIT} bytes") from None
    except (web.RequestPayloadError, ConnectionError):
        # Broken chunks or Content-Encoding, or a client gone mid-body: its fault, not a
        # bug, and the parser's message quotes the body.
        raise malformed() from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None


def parse_integer(raw: str, maximum: int) -> int | None:
    """`raw` as an integer from 1 to `maximum`, or None: ASCII digits only (`DIGITS_PATTERN`).

    Not str.isdigit(): it is true of "¹" and "٣", which int() refuses or reads. Leading
    zeros are dropped before the length is checked, so "007" is 7 and a thousand
    digits never reach int().
    """
    if not _DIGITS.fullmatch(raw):
        return None
    digits = raw.lstrip("0")
    if not digits or len(digits) > len(str(maximum)) or int(digits) > maximum:
        return None
    return int(digits)


@dataclass(frozen=True)
class PageQuery:
    status: TeamStatus | None
    limit: int
    cursor: str | None


def parse_page_query(query: MultiMapping[str]) -> PageQuery:
    """`?status=&limit=&cursor=`, each as the document says; nothing else, nothing twice."""
    _only(query, {"status", "limit", "cursor"})
    status = query.get("status")
    if status is not None and status not in TeamStatus._value2member_map_:
        raise invalid(f"status must be one of {', '.join(s.value for s in TeamStatus)}")
    limit, cursor = _page_bounds(query)
    return PageQuery(TeamStatus(status) if status is not None else None, limit, cursor)


def _page_bounds(query: MultiMapping[str]) -> tuple[int, str | None]:
    """`?limit=&cursor=` of a page keyed by team id, as the document says."""
    limit = parse_integer(query.get("limit", str(cursors.DEFAULT_PAGE)), cursors.MAX_PAGE)
    if limit is None:
        raise invalid(f"limit must be an integer from 1 to {cursors.MAX_PAGE}")
    cursor = query.get("cursor")
    if cursor is not None:
        try:
            cursors.decode_cursor(cursor)
        except cursors.BadCursor as exc:
            raise invalid(str(exc)) from None
    return limit, cursor


@dataclass(frozen=True)
class HeldQuery:
    base_url: str | None
    limit: int
    cursor: str | None


def parse_held_query(query: MultiMapping[str]) -> HeldQuery:
    """`?base_url=&limit=&cursor=`: the base URL as `GET /v1/guard` lists it, and a page
    as the teams' pages take it."""
    _only(query, {"base_url", "limit", "cursor"})
    base_url = query.get("base_url")
    if base_url is not None and (len(base_url) > BASE_URL_MAX or not _BASE_URL.fullmatch(base_url)):
        raise invalid(
            f"base_url must be an http(s) URL of at most {BASE_URL_MAX} printable ASCII "
            "characters, as GET /v1/guard lists it"
        )
    return HeldQuery(base_url, *_page_bounds(query))


def parse_organization_id(raw: str) -> int:
    organization_id = parse_integer(raw, BIGINT_MAX)
    if organization_id is None:
        raise invalid(f"the organization id must be an integer from 1 to {BIGINT_MAX}")
    return organization_id


GATHERER = web.AppKey("gatherer", Gatherer)


async def wait_until_final(client: ValidationClient, view: RequestView, wait: float) -> RequestView:
    """Poll (from the loop) until the request is final or `wait` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    interval = FIRST_POLL
    while not view.is_final and (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 1.5, MAX_POLL)
        view = await off_loop(functools.partial(_reread, client, view))
    return view


def _reread(client: ValidationClient, view: RequestView) -> RequestView:
    return client.get(view.id) or view


# -- handlers ----------------------------------------------------------------------------


async def post_validation(request: web.Request) -> web.Response:
    client, config = request.app[CLIENT], request.app[CONFIG]
    wait = parse_wait(request.query, config.max_wait)
    idempotency_key = parse_idempotency_key(request)
    submission = parse_submission(await read_json(request))
    ask = Ask(submission.organization_id, submission.integration_id, submission.team_id)
    try:
        if idempotency_key is None:
            view = await request.app[GATHERER].request(ask)
        else:
            view = await off_loop(
                lambda: client.request(
                    ask.organization_id, ask.integration_id, ask.team_id, idempotency_key
                )
            )
    except IdempotencyConflict as exc:
        raise ApiError(
            409, "idempotency_conflict", "that Idempotency-Key names another team"
        ) from exc
    except RecordError as exc:
        raise ApiError(
            503, "busy", "the request could not be recorded; retry", {"Retry-After": "1"}
        ) from exc
    view = await wait_until_final(client, view, wait)
    location = str(request.app.router["validation"].url_for(request_id=view.id))
    return json_response(to_json(view), 200 if view.is_final else 202, {"Location": location})


async def get_validation(request: web.Request) -> web.Response:
    client = request.app[CLIENT]
    view = await off_loop(lambda: client.get(request.match_info["request_id"]))
    if view is None:
        raise ApiError(404, "not_found", "no such validation request")
    return json_response(to_json(view))


async def get_team(request: web.Request) -> web.Response:
    team_id = request.match_info["team_id"]
    sessions = request.app[CLIENT].sessions

    def find() -> TeamRow | None:
        with sessions() as session:
            return teams.get_team(session, team_id)

    # An id no team can have is refused before any lookup (a NUL would not even reach
    # PostgreSQL), and never repeated: it may be a key.
    if not is_team_id(team_id):
        raise bad_team_id()
    row = await off_loop(find)
    if row is None:
        raise ApiError(404, "not_found", "no such team")
    return json_response(to_json(row))


async def list_teams(request: web.Request) -> web.Response:
    organization_id = parse_organization_id(request.match_info["organization_id"])
    page_query = parse_page_query(request.query)
    sessions = request.app[CLIENT].sessions

    def page() -> teams.TeamPage | None:
        with sessions() as session:
            if not teams.organization_exists(session, organization_id):
                return None
            return teams.list_team_page(
                session,
                organization_id,
                status=page_query.status,
                limit=page_query.limit,
                cursor=page_query.cursor,
            )

    found = await off_loop(page)
    if found is None:
        raise ApiError(404, "not_found", "no such organization")
    return json_response(
        {"teams": [to_json(t) for t in found.teams], "next_cursor": found.next_cursor}
    )


async def get_migration(request: web.Request) -> web.Response:
    """The organization's migration report, from what the last probes recorded."""
    organization_id = parse_organization_id(request.match_info["organization_id"])
    if request.query:
        raise invalid("this route takes no query parameters")
    sessions = request.app[CLIENT].sessions

    def read() -> readiness.MigrationReport | None:
        with sessions() as session:
            if not teams.organization_exists(session, organization_id):
                return None
            return readiness.report(session, organization_id)

    found = await off_loop(read)
    if found is None:
        raise ApiError(404, "not_found", "no such organization")
    return json_response(found.as_dict())


async def get_guard(request: web.Request) -> web.Response:
    """Each base URL's mass-change guard, and how many changes it holds."""
    if request.query:
        raise invalid("this route takes no query parameters")
    config, sessions = request.app[CONFIG], request.app[CLIENT].sessions

    def read() -> list[held.BaseUrlGuard]:
        with sessions() as session:
            return held.guard_report(session, config.guard_windows, config.guard_thresholds)

    found = await off_loop(read)
    return json_response(
        {"where": config.guard_windows.where, "base_urls": [to_json(g) for g in found]}
    )


async def list_held(request: web.Request) -> web.Response:
    """The changes the guard holds (of one base URL), a page at a time by team id."""
    held_query = parse_held_query(request.query)
    sessions = request.app[CLIENT].sessions

    def page() -> held.HeldPage:
        with sessions() as session:
            return held.held_page(
                session, held_query.base_url, limit=held_query.limit, cursor=held_query.cursor
            )

    found = await off_loop(page)
    return json_response(
        {"held": [to_json(row) for row in found.held], "next_cursor": found.next_cursor}
    )


async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type="application/json")


# -- health ------------------------------------------------------------------------------


def database_reachable(client: ValidationClient) -> bool:
    try:
        with client.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        log.warning("api.health_failed", extra={"check": "database", "error": type(exc).__name__})
        return False
    return True


def broker_reachable(client: ValidationClient) -> bool:
    try:
        with client.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=HEALTH_TIMEOUT)
    except Exception as exc:
        log.warning("api.health_failed", extra={"check": "broker", "error": type(exc).__name__})
        return False
    return True


async def check_health(client: ValidationClient) -> dict[str, Any]:
    """`{"status", "checks": {name: "ok" | "unavailable"}}`; add a check by adding a name."""
    database, broker = await asyncio.gather(
        asyncio.to_thread(database_reachable, client), asyncio.to_thread(broker_reachable, client)
    )
    checks = {
        name: "ok" if ok else "unavailable"
        for name, ok in [("database", database), ("broker", broker)]
    }
    return {
        "status": "ok" if all(v == "ok" for v in checks.values()) else "unavailable",
        "checks": checks,
    }


async def healthz(request: web.Request) -> web.Response:
    report = await check_health(request.app[CLIENT])
    return json_response(report, 200 if report["status"] == "ok" else 503)


# -- the application and the server ------------------------------------------------------


async def _use_thread_pool(app: web.Application) -> None:
    # asyncio.to_thread() runs on the loop's default executor: size it for the DB pool.
    pool = ThreadPoolExecutor(THREADS, thread_name_prefix="ogv-api")
    asyncio.get_running_loop().set_default_executor(pool)


def build_app(client: ValidationClient, config: ApiConfig) -> web.Application:
    """The API as an aiohttp application; the caller owns `client`. Serve it with `ApiRunner`."""
    app = web.Application(
        middlewares=[access_log_middleware, errors_middleware, auth_middleware],
        client_max_size=BODY_LIMIT,
    )
    app[CLIENT] = client
    app[CONFIG] = config
    app[GATHERER] = Gatherer(client, spacing=config.group_spacing)
    app[OPENAPI] = json.dumps(document()).encode()
    app.on_startup.append(_use_thread_pool)
    app.router.add_post("/v1/validations", post_validation)
    app.router.add_get("/v1/validations/{request_id}", get_validation, name="validation")
    # Any character, "/" and "\n" included: a malformed id is refused by get_team (422),
    # not left to fall through to "no such route".
    app.router.add_get(r"/v1/teams/{team_id:[\s\S]+}", get_team)
    # Not aiohttp's default [^{}/]+: an id with a brace is refused by the handler (422) too.
    app.router.add_get("/v1/organizations/{organization_id:[^/]+}/teams", list_teams)
    app.router.add_get("/v1/organizations/{organization_id:[^/]+}/migration", get_migration)
    app.router.add_get("/v1/guard", get_guard)
    app.router.add_get("/v1/changes/held", list_held)
    app.router.add_get("/v1/openapi.json", get_openapi)
    app.router.add_get("/healthz", healthz)
    return app


def api_config(settings: Settings, host: str, insecure_local: bool) -> ApiConfig:
    """The server's config, or StartRefused: no token needs --insecure-local on loopback."""
    token = settings.api_token.get_secret_value() if settings.api_token else None
    if insecure_local and host not in LOCAL_HOSTS:
        raise StartRefused(f"--insecure-local only binds to {' or '.join(sorted(LOCAL_HOSTS))}")
    if token is None and not insecure_local:
        raise StartRefused(
            "OGV_API_TOKEN is not set; set it, or run with --insecure-local on this machine only"
        )
    return ApiConfig(
        token=token,
        max_wait=settings.api_max_wait,
        group_spacing=settings.api_group_spacing,
        guard_windows=guard.windows_for(settings),
        guard_thresholds=guard.Thresholds.from_settings(settings),
    )


class ApiRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering what its HTTP parser refuses our way.

    aiohttp answers a request its parser cannot read (a control byte in a header, a
    line over 8190 bytes, a broken chunk, an unknown method or Content-Encoding) in
    `handle_error`, before any middleware: with the parser's message as a text/plain
    body and the exception on the `aiohttp.server` ERROR log. Both quote the line
    that failed, an `Authorization` header included. Here the answer is
    `malformed_request` and the log names the exception's class only.
    """

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The JSON error for `status` (400 from the parser), closing the connection.

        `message` is the parser's, quoting the request: it is dropped.
        """
        if request.writer.output_size > 0:  # as aiohttp does: the answer is half sent
            raise ConnectionError("the answer is partly sent; no error can follow it")
        if status < 500:
            error = malformed()
            # The access-log line of a request no middleware saw.
            log.info("api.request", extra={"status": error.status, "error": _name(exc)})
        else:
            error = ApiError(500, "internal_error", "an unexpected error; it is logged")
            log.error("api.unhandled", extra={"error": _name(exc)})
        response = error_response(error)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's own failures, by the exception's class: their text may quote the request.

        A broken body a handler already refused is read once more by aiohttp before
        the connection closes; that second failure is the client's, logged at DEBUG.
        """
        exc = kw.get("exc_info")
        if not isinstance(exc, BaseException):
            exc = sys.exc_info()[1]
        clients_fault = isinstance(
            exc, web.RequestPayloadError | HttpProcessingError | ConnectionError
        )
        log.log(
            logging.DEBUG if clients_fault else logging.ERROR,
            "api.server_error",
            extra={"error": _name(exc)},
        )


def _name(exc: BaseException | None) -> str | None:
    return type(exc).__name__ if exc is not None else None


class _Server(web.Server):
    """aiohttp's low-level server, with `ApiRequestHandler` on every connection."""

    def __call__(self) -> RequestHandler:
        # What web.Server.__call__ does, with our class: aiohttp has no public hook
        # for it (aio-libs/aiohttp#3287, #9882). aiohttp is pinned exactly, and
        # tests/test_api_hostile.py fails if this stops taking effect.
        return ApiRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """`web.AppRunner` whose server answers unreadable requests with `ApiRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # AppRunner builds a plain web.Server from private parts of the application;
        # retyping it keeps every one of them.
        server.__class__ = _Server
        return server


async def start_api(
    app: web.Application, host: str, port: int, *, handle_signals: bool = False
) -> ApiRunner:
    """`app` listening on host:port through `ApiRunner`; the caller awaits its cleanup()."""
    runner = ApiRunner(
        app,
        handle_signals=handle_signals,
        access_log=None,  # access_log_middleware writes the access log
        keepalive_timeout=KEEPALIVE_TIMEOUT,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def _serve_until_stopped(app: web.Application, host: str, port: int, auth: bool) -> None:
    runner = await start_api(app, host, port, handle_signals=True)
    log.info("api.started", extra={"host": host, "port": port, "auth": auth})
    try:
        await asyncio.Event().wait()  # SIGINT and SIGTERM raise GracefulExit
    finally:
        await runner.cleanup()


def serve(settings: Settings, host: str, port: int, insecure_local: bool = False) -> None:
    """Run the API in the foreground until SIGINT or SIGTERM."""
    config = api_config(settings, host, insecure_local)
    configure_logging(settings.log_level, settings.log_format)
    client = ValidationClient.from_settings(settings)
    app = build_app(client, config)

    async def close_client(_: web.Application) -> None:
        await asyncio.to_thread(client.close)

    app.on_cleanup.append(close_client)
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(app, host, port, config.token is not None))
