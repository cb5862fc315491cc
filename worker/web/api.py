"""The HTTP API for web apps in any language: `ogv api`, aiohttp.web over `ValidationClient`.

    POST /v1/validations                       ask for a check (?wait=SECONDS, Idempotency-Key)
    GET  /v1/validations/{request_id}          a request's state and outcome
    GET  /v1/teams/{team_id}                   a team's status
    GET  /v1/organizations/{org}/teams         an organization's teams (?status, limit, cursor)
    GET  /v1/organizations/{org}/migration     its readiness for JSM Ops, as recorded
    GET  /v1/openapi.json                      the OpenAPI document (worker/web/openapi.py)
    GET  /healthz                              database and broker reachable

Every /v1 route but the document needs `Authorization: Bearer $OGV_API_TOKEN`.
Refused input is answered `{"error": {"code", "message"}}` by raising `ApiError`;
the codes are listed in `worker.web.openapi.ERROR_CODES`. Messages never echo input
(it could be a key pasted into the wrong field), and a bug is answered with a
generic 500, logged as `api.unhandled` without the body.

The database is reached through SQLAlchemy's sync API on a thread pool, so the
event loop is never blocked; `?wait` polls from the loop with `asyncio.sleep`
instead of holding a thread.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from multidict import MultiMapping
from sqlalchemy import text

from models import TeamStatus
from worker import readiness
from worker.checks.requests import Ask, IdempotencyConflict
from worker.inventory import RecordError
from worker.logs import configure_logging
from worker.settings import Settings
from worker.web import teams
from worker.web.client import ValidationClient
from worker.web.enqueue import RequestView
from worker.web.errors import ApiError, off_loop
from worker.web.grouping import Gatherer
from worker.web.openapi import BIGINT_MAX, IDEMPOTENCY_KEY_MAX, INTEGER_MAX, TEAM_ID_MAX, document
from worker.web.teams import TeamRow

log = logging.getLogger("ogv.api")

BODY_LIMIT = 16 * 1024
THREADS = 16  # at most OGV_DATABASE_POOL_SIZE (20), or connections are opened and closed
FIRST_POLL = 0.02
MAX_POLL = 0.25
HEALTH_TIMEOUT = 3  # seconds
PUBLIC_PATHS = frozenset({"/healthz", "/v1/openapi.json"})
LOCAL_HOSTS = frozenset({"127.0.0.1", "::1"})

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


def parse_submission(body: Any) -> Submission:
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    fields = {"organization_id", "integration_id", "team_id"}
    if set(body) - fields:
        raise invalid("unknown fields; the fields are organization_id, integration_id, team_id")
    team_id = body.get("team_id")
    if not isinstance(team_id, str) or len(team_id) > TEAM_ID_MAX or not team_id.isprintable():
        raise invalid(f"team_id must be a string of at most {TEAM_ID_MAX} printable characters")
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
    """`?wait=SECONDS`: 0 when absent, at most `cap`."""
    _only(query, {"wait"})
    raw = query.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise invalid("wait must be a number of seconds") from None
    if not math.isfinite(wait) or wait < 0:
        raise invalid("wait must be a number of seconds")
    return min(wait, cap)


def parse_idempotency_key(request: web.Request) -> str | None:
    keys = request.headers.getall("Idempotency-Key", [])
    if not keys:
        return None
    key = keys[0]
    if len(keys) > 1 or not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX:
        raise invalid(f"Idempotency-Key must be one value of 1 to {IDEMPOTENCY_KEY_MAX} chars")
    if not key.isascii() or not key.isprintable():
        raise invalid("Idempotency-Key must be printable ASCII")
    return key


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, "too_large", f"the body is over {BODY_LIMIT} bytes") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None


def _is_decimal(raw: str) -> bool:
    # Not str.isdigit() alone: it is true of "¹" and "٣", which int() refuses or reads.
    return raw.isascii() and raw.isdigit() and len(raw) <= 19


@dataclass(frozen=True)
class PageQuery:
    status: TeamStatus | None
    limit: int
    cursor: str | None


def parse_page_query(query: MultiMapping[str]) -> PageQuery:
    _only(query, {"status", "limit", "cursor"})
    status = query.get("status")
    if status is not None and status not in TeamStatus._value2member_map_:
        raise invalid(f"status must be one of {', '.join(s.value for s in TeamStatus)}")
    raw_limit = query.get("limit", str(teams.DEFAULT_PAGE))
    if not _is_decimal(raw_limit) or not 1 <= int(raw_limit) <= teams.MAX_PAGE:
        raise invalid(f"limit must be an integer from 1 to {teams.MAX_PAGE}")
    return PageQuery(
        TeamStatus(status) if status is not None else None, int(raw_limit), query.get("cursor")
    )


def parse_organization_id(raw: str) -> int:
    if not _is_decimal(raw) or not 1 <= int(raw) <= BIGINT_MAX:
        raise invalid(f"the organization id must be an integer from 1 to {BIGINT_MAX}")
    return int(raw)


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

    # An id no team can have is not looked up (a NUL would not even reach PostgreSQL).
    row = await off_loop(find) if len(team_id) <= TEAM_ID_MAX and team_id.isprintable() else None
    if row is None:
        raise ApiError(404, "not_found", "no such team")
    return json_response(to_json(row))


async def list_teams(request: web.Request) -> web.Response:
    organization_id = parse_organization_id(request.match_info["organization_id"])
    page_query = parse_page_query(request.query)
    if page_query.cursor is not None:
        try:
            teams.decode_cursor(page_query.cursor)
        except teams.BadCursor as exc:
            raise invalid(str(exc)) from None
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
    """The API as an aiohttp application; the caller owns `client`."""
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=BODY_LIMIT
    )
    app[CLIENT] = client
    app[CONFIG] = config
    app[GATHERER] = Gatherer(client, spacing=config.group_spacing)
    app[OPENAPI] = json.dumps(document()).encode()
    app.on_startup.append(_use_thread_pool)
    app.router.add_post("/v1/validations", post_validation)
    app.router.add_get("/v1/validations/{request_id}", get_validation, name="validation")
    app.router.add_get("/v1/teams/{team_id:.+}", get_team)
    app.router.add_get("/v1/organizations/{organization_id}/teams", list_teams)
    app.router.add_get("/v1/organizations/{organization_id}/migration", get_migration)
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
        token=token, max_wait=settings.api_max_wait, group_spacing=settings.api_group_spacing
    )


def serve(settings: Settings, host: str, port: int, insecure_local: bool = False) -> None:
    """Run the API in the foreground until SIGINT or SIGTERM."""
    config = api_config(settings, host, insecure_local)
    configure_logging(settings.log_level, settings.log_format)
    client = ValidationClient.from_settings(settings)
    app = build_app(client, config)

    async def close_client(_: web.Application) -> None:
        await asyncio.to_thread(client.close)

    app.on_cleanup.append(close_client)
    log.info("api.started", extra={"host": host, "port": port, "auth": config.token is not None})
    web.run_app(app, host=host, port=port, print=None, access_log=None)
