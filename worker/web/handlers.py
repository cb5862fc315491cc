"""The API's handlers, one per route (the routes are listed in `worker.web.routes`).

Each reads its input through `worker.web.inputs`, reaches the database through
SQLAlchemy's sync API on the thread pool (`off_loop`), and answers a view in its
documented shape. `?wait` polls from the loop with `asyncio.sleep` instead of holding
a thread. The writes to integrations and teams are audited as the caller
(`token:<name>`), and a token limited to some organizations finds another's
integrations and teams no more than if they did not exist (404).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy import text

from models import IntegrationStatus
from worker import audit, readiness
from worker.access import Scope
from worker.checks import held
from worker.checks.requests import Ask, IdempotencyConflict
from worker.enqueue import RequestView, confirms_after
from worker.errors import BaseUrlError, Busy, NotFound, RecordError
from worker.inventory import DuplicateTeam
from worker.web import teams
from worker.web.answers import json_response, to_json
from worker.web.client import SavedTeam, ValidationClient
from worker.web.config import CLIENT, CONFIG, GATHERER, OPENAPI
from worker.web.errors import ApiError, off_loop
from worker.web.inputs import (
    bad_team_id,
    invalid,
    is_team_id,
    parse_audit_query,
    parse_held_query,
    parse_idempotency_key,
    parse_integration,
    parse_integration_change,
    parse_integration_id,
    parse_integration_page_query,
    parse_key,
    parse_no_query,
    parse_organization_id,
    parse_page_query,
    parse_submission,
    parse_team,
    parse_wait,
    read_json,
)
from worker.web.middleware import identify
from worker.web.scopes import caller, forbidden, require_sees
from worker.web.teams import TeamRow

log = logging.getLogger("ogv.api")

FIRST_POLL = 0.02
MAX_POLL = 0.25
HEALTH_TIMEOUT = 3  # seconds


async def wait_until_final(client: ValidationClient, view: RequestView, wait: float) -> RequestView:
    """Poll (from the loop) until the request is final or `wait` seconds have passed; a
    `confirming` request whose second check is due later is answered at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    interval = FIRST_POLL
    while (
        not view.is_final
        and (remaining := deadline - loop.time()) > 0
        and not confirms_after(view, remaining)
    ):
        await asyncio.sleep(min(interval, remaining))
        interval = min(interval * 1.5, MAX_POLL)
        view = await off_loop(functools.partial(_reread, client, view))
    return view


def _reread(client: ValidationClient, view: RequestView) -> RequestView:
    return client.get(view.id) or view


def no_such_organization() -> ApiError:
    return ApiError(404, "not_found", "no such organization")


# -- handlers ----------------------------------------------------------------------------


async def post_validation(request: web.Request) -> web.Response:
    client, config = request.app[CLIENT], request.app[CONFIG]
    wait = parse_wait(request.query, config.max_wait)
    idempotency_key = parse_idempotency_key(request)
    submission = parse_submission(await read_json(request))
    require_sees(
        request,
        submission.organization_id,
        forbidden("this token may not ask for checks of that organization"),
    )
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
    request_id = request.match_info["request_id"]
    view = await off_loop(lambda: client.get(request_id))
    if view is None:
        if await off_loop(lambda: client.expired(request_id)):
            raise ApiError(
                410, "expired", "the validation request is older than the retention and was pruned"
            )
        raise ApiError(404, "not_found", "no such validation request")
    if not caller(request).sees(view.organization_id):
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
    if row is None or not caller(request).sees(row.organization_id):
        raise ApiError(404, "not_found", "no such team")
    return json_response(to_json(row))


async def list_teams(request: web.Request) -> web.Response:
    organization_id = parse_organization_id(request.match_info["organization_id"])
    page_query = parse_page_query(request.query)
    require_sees(request, organization_id, no_such_organization())
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
        raise no_such_organization()
    return json_response(
        {"teams": [to_json(t) for t in found.teams], "next_cursor": found.next_cursor}
    )


async def get_migration(request: web.Request) -> web.Response:
    """The organization's migration report, from what the last probes recorded."""
    organization_id = parse_organization_id(request.match_info["organization_id"])
    if request.query:
        raise invalid("this route takes no query parameters")
    require_sees(request, organization_id, no_such_organization())
    sessions = request.app[CLIENT].sessions

    def read() -> readiness.MigrationReport | None:
        with sessions() as session:
            if not teams.organization_exists(session, organization_id):
                return None
            return readiness.report(session, organization_id)

    found = await off_loop(read)
    if found is None:
        raise no_such_organization()
    return json_response(found.as_dict())


async def get_guard(request: web.Request) -> web.Response:
    """Each base URL's mass-change guard, and how many changes it holds."""
    if request.query:
        raise invalid("this route takes no query parameters")
    if caller(request).organizations is not None:
        # Its windows and counts are every organization's: one tenant's token never
        # reads how many checks and changes the others made.
        raise forbidden(
            "the guard counts every organization's checks: read it with a token for every "
            "organization; GET /v1/changes/held lists this token's held changes"
        )
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
                session,
                held_query.base_url,
                limit=held_query.limit,
                cursor=held_query.cursor,
                organizations=caller(request).organizations,
            )

    found = await off_loop(page)
    return json_response(
        {"held": [to_json(row) for row in found.held], "next_cursor": found.next_cursor}
    )


async def list_audit(request: web.Request) -> web.Response:
    """The audit log, newest first, a page at a time; a token limited to some
    organizations reads only their events."""
    query = parse_audit_query(request.query)
    limited = dataclasses.replace(query, organizations=caller(request).organizations)
    sessions = request.app[CLIENT].sessions

    def page() -> audit.Page:
        with sessions() as session:
            return audit.page(session, limited)

    found = await off_loop(page)
    return json_response(
        {"events": [to_json(event) for event in found.events], "next_cursor": found.next_cursor}
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
    caller = await identify(request)  # a public route; which keys it holds is the operator's
    if caller is not None and caller.allows(Scope.OPERATE):
        report["key_fingerprints"] = list(request.app[CONFIG].fingerprints)
    return json_response(report, 200 if report["status"] == "ok" else 503)


# -- integrations and teams --------------------------------------------------------------

T = TypeVar("T")


async def _write(call: Callable[[], T]) -> T:
    """Run a write of the inventory off the loop; its refusals become API errors."""
    try:
        return await off_loop(call)
    except IdempotencyConflict as exc:
        raise ApiError(409, "idempotency_conflict", str(exc)) from exc
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except DuplicateTeam as exc:
        raise ApiError(409, "duplicate_team", str(exc)) from exc
    except Busy as exc:
        raise ApiError(503, "busy", str(exc), {"Retry-After": "1"}) from exc
    except RecordError as exc:  # the messages of inventory's refusals repeat no key
        raise invalid(str(exc)) from exc
    except BaseUrlError as exc:
        raise invalid(f"{exc}; the allowed ones are on OGV_ALLOWED_BASE_URLS") from exc


def _organization(request: web.Request) -> int:
    """The path's organization; one the token may not see answers 404, as if it had none."""
    organization_id = parse_organization_id(request.match_info["organization_id"])
    require_sees(request, organization_id, no_such_organization())
    return organization_id


def _ids(request: web.Request) -> tuple[int, int]:
    organization_id = parse_organization_id(request.match_info["organization_id"])
    integration_id = parse_integration_id(request.match_info["integration_id"])
    require_sees(request, organization_id, no_such_organization())
    return organization_id, integration_id


async def _team_id(request: web.Request) -> str:
    """The path's team id, of a team the token may see (else 404, as if there were none:
    the team's organization is looked up first)."""
    team_id = request.match_info["team_id"]
    if not is_team_id(team_id):
        raise bad_team_id()
    client = request.app[CLIENT]
    row = await off_loop(lambda: client.get_team(team_id))
    if row is None or not caller(request).sees(row.organization_id):
        raise ApiError(404, "not_found", "no such team")
    return team_id


async def _settled(client: ValidationClient, saved: SavedTeam, wait: float) -> SavedTeam:
    """`saved` once its check is final or `wait` seconds have passed, the team re-read."""
    if wait <= 0 or saved.validation.is_final:
        return saved
    view = await wait_until_final(client, saved.validation, wait)
    team = await off_loop(functools.partial(client.get_team, saved.team.team_id))
    return SavedTeam(team or saved.team, view)


async def post_integration(request: web.Request) -> web.Response:
    organization_id = _organization(request)
    parse_no_query(request.query)
    idempotency_key = parse_idempotency_key(request)
    asked = parse_integration(await read_json(request))
    client, actor = request.app[CLIENT], caller(request).actor
    view, created = await _write(
        lambda: client.add_integration(
            organization_id,
            asked.account,
            platform=asked.platform,
            base_url=asked.base_url,
            probe=asked.probe,
            idempotency_key=idempotency_key,
            actor=actor,
        )
    )
    location = request.app.router["integration"].url_for(
        organization_id=str(organization_id), integration_id=str(view.integration_id)
    )
    return json_response(to_json(view), 201 if created else 200, {"Location": str(location)})


async def list_integrations(request: web.Request) -> web.Response:
    organization_id = _organization(request)
    status, limit, after = parse_integration_page_query(request.query)
    client = request.app[CLIENT]
    page = await off_loop(
        lambda: client.list_integrations(
            organization_id,
            status=status,
            limit=limit,
            cursor=str(after) if after is not None else None,
        )
    )
    return json_response(
        {"integrations": [to_json(i) for i in page.integrations], "next_cursor": page.next_cursor}
    )


async def get_integration(request: web.Request) -> web.Response:
    organization_id, integration_id = _ids(request)
    parse_no_query(request.query)
    client = request.app[CLIENT]
    view = await off_loop(lambda: client.get_integration(organization_id, integration_id))
    if view is None:
        raise ApiError(404, "not_found", "no such integration in that organization")
    return json_response(to_json(view))


async def patch_integration(request: web.Request) -> web.Response:
    organization_id, integration_id = _ids(request)
    parse_no_query(request.query)
    status = parse_integration_change(await read_json(request))
    client = request.app[CLIENT]
    active = status is IntegrationStatus.ACTIVE
    change = client.enable_integration if active else client.disable_integration
    actor = caller(request).actor
    view = await _write(lambda: change(organization_id, integration_id, actor=actor))
    return json_response(to_json(view))


async def delete_integration(request: web.Request) -> web.Response:
    organization_id, integration_id = _ids(request)
    parse_no_query(request.query)
    client = request.app[CLIENT]
    actor = caller(request).actor
    removed = await _write(
        lambda: client.remove_integration(organization_id, integration_id, actor=actor)
    )
    return json_response(to_json(removed))


async def post_team(request: web.Request) -> web.Response:
    organization_id, integration_id = _ids(request)
    wait = parse_wait(request.query, request.app[CONFIG].max_wait)
    idempotency_key = parse_idempotency_key(request)
    asked = parse_team(await read_json(request))
    client, actor = request.app[CLIENT], caller(request).actor
    saved, created = await _write(
        lambda: client.add_team(
            organization_id,
            integration_id,
            asked.label,
            asked.integration_key,
            idempotency_key=idempotency_key,
            actor=actor,
        )
    )
    saved = await _settled(client, saved, wait)
    location = request.app.router["team"].url_for(team_id=saved.team.team_id)
    return json_response(to_json(saved), 201 if created else 200, {"Location": str(location)})


async def list_integration_teams(request: web.Request) -> web.Response:
    organization_id, integration_id = _ids(request)
    page_query = parse_page_query(request.query)
    client = request.app[CLIENT]

    def page() -> teams.TeamPage | None:
        if client.get_integration(organization_id, integration_id) is None:
            return None
        return client.list_teams(
            organization_id,
            integration_id=integration_id,
            status=page_query.status,
            limit=page_query.limit,
            cursor=page_query.cursor,
        )

    found = await off_loop(page)
    if found is None:
        raise ApiError(404, "not_found", "no such integration in that organization")
    return json_response(
        {"teams": [to_json(t) for t in found.teams], "next_cursor": found.next_cursor}
    )


async def put_key(request: web.Request) -> web.Response:
    wait = parse_wait(request.query, request.app[CONFIG].max_wait)
    key = parse_key(await read_json(request))
    team_id = await _team_id(request)
    client, actor = request.app[CLIENT], caller(request).actor
    saved = await _write(lambda: client.replace_key(team_id, key, actor=actor))
    return json_response(to_json(await _settled(client, saved, wait)))


async def delete_team(request: web.Request) -> web.Response:
    parse_no_query(request.query)
    team_id = await _team_id(request)
    client, actor = request.app[CLIENT], caller(request).actor
    removed = await _write(lambda: client.remove_team(team_id, actor=actor))
    return json_response(to_json(removed))
