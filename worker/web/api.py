"""The HTTP API for web apps in any language: `ogv api`, aiohttp.web over `ValidationClient`.

    POST /v1/validations                       ask for a check (?wait=SECONDS, Idempotency-Key)
    GET  /v1/validations/{request_id}          a request's state and outcome
    GET  /v1/teams/{team_id}                   a team's status
    GET  /v1/organizations/{org}/teams         an organization's teams (?status, limit, cursor)
    GET  /v1/organizations/{org}/migration     its readiness for JSM Ops, as recorded
    POST /v1/organizations/{org}/integrations  install an account (Idempotency-Key)
    GET  /v1/organizations/{org}/integrations  its integrations (?status, limit, cursor)
    GET, PATCH, DELETE .../integrations/{id}   one: read, disable/enable, remove
    POST .../integrations/{id}/teams           store a team's key, check it (?wait)
    GET  .../integrations/{id}/teams           its teams (?status, limit, cursor)
    PUT  /v1/teams/{team_id}/key               replace a team's key, check it (?wait)
    DELETE /v1/teams/{team_id}                 remove a team
    GET  /v1/guard                             each base URL's mass-change guard, held counts
    GET  /v1/changes/held                      the changes it holds (?base_url, limit, cursor)
    GET  /v1/audit                             the audit log, newest first (?organization_id,
                                               action, since, limit, cursor)
    GET  /v1/openapi.json                      the OpenAPI document (worker/web/openapi.py)
    GET  /healthz                              database and broker reachable (and, to an
                                               authenticated caller, the keys' fingerprints)

    GET  /v1/audit                             the audit log, newest first (?organization_id,
                                               action, since, limit, cursor)

    /console                                   the operators' console (worker/web/console/):
                                               HTML pages, signed in with an operate token

Every /v1 route but the document needs `Authorization: Bearer <token>`: a token of
`ogv tokens create` with the route's scope (worker/web/scopes.py), or one of
OGV_API_TOKEN's.
Refused input is answered `{"error": {"code", "message"}}` by raising `ApiError`;
the codes are listed in `worker.web.openapi.ERROR_CODES`. The rooms:

    config.py      ApiConfig, `api_config` (or StartRefused), the application keys
    inputs.py      query, header and body, read and refused with the published formats
    routes.py      every route and its handler (scopes.py: the token scope each needs)
    handlers.py    one handler per route, the database reached on a thread pool
    answers.py     JSON answers, views in their documented shapes, the error shape
    middleware.py  the access log (`api.request`), the error shape, authentication
    server.py      aiohttp's private server classes, answering unreadable HTTP our way
    heartbeat.py   the API's row in `api_processes`: which encryption keys it holds
    openapi.py     the OpenAPI document: error codes, responses; its operations in
                   openapi_paths.py and openapi_inventory.py, built from openapi_parts.py;
                   schemas.py generates its schemas from the views

This module puts them together (`build_app`) and serves them (`start_api`, `serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from worker import key_holders, metrics
from worker.access import Verifier, bootstrap_tokens
from worker.database import session_factory
from worker.logs import configure_logging
from worker.settings import Settings
from worker.web import heartbeat
from worker.web.client import ValidationClient
from worker.web.config import (
    CLIENT,
    CONFIG,
    GATHERER,
    OPENAPI,
    VERIFIER,
    ApiConfig,
    StartRefused,
    api_config,
)
from worker.web.console.routes import add_console
from worker.web.grouping import Gatherer
from worker.web.inputs import BODY_LIMIT
from worker.web.middleware import access_log_middleware, auth_middleware, errors_middleware
from worker.web.openapi import document
from worker.web.routes import add_routes
from worker.web.server import ApiRunner

__all__ = ["ApiConfig", "ApiRunner", "StartRefused", "build_app", "serve", "start_api"]

log = logging.getLogger("ogv.api")

THREADS = 16  # at most OGV_DATABASE_POOL_SIZE (20), or connections are opened and closed
KEEPALIVE_TIMEOUT = 75  # seconds; what web.run_app uses


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
    app[VERIFIER] = Verifier(
        client.sessions, bootstrap_tokens(config.token), ttl=config.token_cache_seconds
    )
    app[OPENAPI] = json.dumps(document()).encode()
    app.on_startup.append(_use_thread_pool)
    if config.process_name is not None:
        app.on_startup.append(heartbeat.start)
        app.on_cleanup.append(heartbeat.stop)  # before close_client: it needs the database
    add_routes(app)
    add_console(app)
    return app


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
    config = dataclasses.replace(config, process_name=key_holders.api_name(port))
    configure_logging(settings.log_level, settings.log_format)
    if settings.tracing_on:
        from worker import tracing  # only when on: none of OpenTelemetry is needed otherwise

        tracing.start(settings, "api")  # before the app is built: it instruments aiohttp
    metrics.serve_api(settings, session_factory())
    client = ValidationClient.from_settings(settings)
    app = build_app(client, config)

    async def close_client(_: web.Application) -> None:
        await asyncio.to_thread(client.close)

    app.on_cleanup.append(close_client)
    with contextlib.suppress(web.GracefulExit, KeyboardInterrupt):
        asyncio.run(_serve_until_stopped(app, host, port, config.token is not None))
