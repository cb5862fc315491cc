"""The console's handlers: read the request, call a query off the loop, answer a page.

`page` wraps a GET view (the visitor must be signed in, else to the sign-in form);
`action` wraps a POST (Origin and CSRF first, then the signed-in visitor). Every
answer is HTML with a strict Content-Security-Policy (no script, styles from the
console's own stylesheet), never framed, never cached.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from models import Requester, TeamStatus
from models.integration import BIGINT_MAX
from worker import readiness
from worker.access import LOCAL, MISS, Caller, token_hash
from worker.checks import held, platform_health
from worker.enqueue import publish_notices
from worker.periodic import recheck
from worker.platforms.baseurl import BaseUrlError, normalise_base_url
from worker.platforms.sunset import today as utc_today
from worker.web import teams as team_reads
from worker.web.config import CLIENT, CONFIG, VERIFIER
from worker.web.console import auth, pages, queries
from worker.web.console.auth import SESSION_KEYS, Refused, Visitor
from worker.web.console.markup import Markup
from worker.web.errors import off_loop
from worker.web.inputs import is_team_id, parse_integer

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STYLESHEET = resources.files("worker.web.console").joinpath("console.css").read_bytes()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PageView = Callable[[web.Request, Visitor], Awaitable[Markup]]
ActionView = Callable[[web.Request, Visitor, MultiDictProxy[Any]], Awaitable[web.StreamResponse]]


def answer(body: Markup, status: int = 200) -> web.Response:
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers=SECURITY_HEADERS,
    )


def see_other(location: str) -> web.Response:
    """The answer to a form: go to `location` (a GET), so a reload never posts again."""
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


def page(view: PageView) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        found = await auth.visitor(request)
        cookie = None
        if found is None and auth.open_access(request):
            session, cookie = request.app[SESSION_KEYS].issue(None, time.time())
            found = Visitor(session, LOCAL, request.app[SESSION_KEYS].csrf(session))
        if found is None:
            return see_other("/console/sign-in")
        try:
            response = answer(await view(request, found))
        except Refused as exc:
            response = answer(pages.message_page("Not shown", exc.message, found), exc.status)
        if cookie is not None:
            auth.set_session_cookie(request, response, cookie)
        return response

    return handler


def action(view: ActionView) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            auth.check_origin(request)
            form = await request.post()
            auth.check_csrf(request, auth.current_session(request), form.get("csrf"))
            found = await auth.visitor(request)
            if found is None:
                raise Refused(401, "sign in again: the session has ended")
            return await view(request, found, form)
        except Refused as exc:
            return answer(pages.message_page("Refused", exc.message, None), exc.status)

    return handler


# -- signing in and out ------------------------------------------------------------------


async def sign_in_form(request: web.Request) -> web.StreamResponse:
    if await auth.visitor(request) is not None:
        return see_other("/console/fleet")
    keys = request.app[SESSION_KEYS]
    session = auth.current_session(request)
    cookie = None
    if session is None:
        session, cookie = keys.issue(None, time.time())
    response = answer(pages.sign_in(keys.csrf(session)))
    if cookie is not None:
        auth.set_session_cookie(request, response, cookie)
    return response


async def sign_in(request: web.Request) -> web.StreamResponse:
    keys = request.app[SESSION_KEYS]
    try:
        auth.check_origin(request)
        form = await request.post()
        session = auth.current_session(request)
        auth.check_csrf(request, session, form.get("csrf"))
    except Refused as exc:
        return answer(pages.message_page("Refused", exc.message, None), exc.status)
    assert session is not None  # check_csrf refuses a request without one
    given = form.get("token")
    token = given.strip() if isinstance(given, str) else ""
    caller = await _caller_of_token(request, token) if token else None
    refusal = auth.console_refusal(caller) if token else "paste an API token"
    if refusal is not None:
        status = 401 if caller is None else 403
        return answer(pages.sign_in(keys.csrf(session), refusal), status)
    # A new session id at sign-in: a session planted before it is worth nothing after.
    _, cookie = keys.issue(token_hash(token), time.time())
    response = see_other("/console/fleet")
    auth.set_session_cookie(request, response, cookie)
    return response


async def _caller_of_token(request: web.Request, token: str) -> Caller | None:
    verifier = request.app[VERIFIER]
    raw = token.encode("utf-8", "surrogateescape")
    known = verifier.cached(raw)
    if known is MISS:
        return await off_loop(lambda: verifier.verify(raw))
    return known if isinstance(known, Caller) else None


async def sign_out(request: web.Request) -> web.StreamResponse:
    try:
        auth.check_origin(request)
        form = await request.post()
        auth.check_csrf(request, auth.current_session(request), form.get("csrf"))
    except Refused as exc:
        return answer(pages.message_page("Refused", exc.message, None), exc.status)
    response = see_other("/console/sign-in")
    auth.clear_session_cookie(request, response)
    return response


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=STYLESHEET,
        content_type="text/css",
        charset="utf-8",
        headers={"Cache-Control": "max-age=300", "X-Content-Type-Options": "nosniff"},
    )


async def home(request: web.Request) -> web.StreamResponse:
    return see_other("/console/fleet")


# -- the pages ---------------------------------------------------------------------------


def _cursor(request: web.Request, name: str) -> str | None:
    return request.query.get(name) or None


@page
async def fleet(request: web.Request, visitor: Visitor) -> Markup:
    sessions = request.app[CLIENT].sessions
    orgs_after, changes_after = _cursor(request, "orgs_after"), _cursor(request, "changes_after")

    def read() -> pages.Fleet:
        with sessions() as session:
            return pages.Fleet(
                statuses=queries.status_counts(session),
                platforms=queries.platform_counts(session),
                organizations=queries.organizations_page(session, cursor=orgs_after),
                days=queries.changes_per_day(session, utc_today()),
                changes=queries.newest_changes(session, cursor=changes_after),
                orgs_cursor=orgs_after,
                changes_cursor=changes_after,
            )

    return pages.fleet(await _bounded(read), visitor)


async def _bounded(read: Callable[[], Any]) -> Any:
    try:
        return await off_loop(read)
    except queries.BadCursor as exc:
        raise Refused(400, "that page link is not one the console gave out") from exc


@page
async def organization(request: web.Request, visitor: Visitor) -> Markup:
    raw = request.query.get("id", "").strip()
    if not raw:
        return pages.organization_search(visitor)
    organization_id = parse_integer(raw, BIGINT_MAX)
    if organization_id is None:
        return pages.organization_search(
            visitor, f"an organization id is a whole number from 1 to {BIGINT_MAX}"
        )
    status_text = request.query.get("status") or None
    if status_text is not None and status_text not in TeamStatus._value2member_map_:
        raise Refused(400, f"status is one of {', '.join(s.value for s in TeamStatus)}")
    status = TeamStatus(status_text) if status_text else None
    after = _cursor(request, "teams_after")
    sessions = request.app[CLIENT].sessions

    def read() -> pages.Organization | None:
        with sessions() as session:
            if not team_reads.organization_exists(session, organization_id):
                return None
            return pages.Organization(
                organization_id=organization_id,
                integrations=queries.integrations_of(session, organization_id),
                teams=queries.teams_of(session, organization_id, status=status, cursor=after),
                readiness=readiness.report(session, organization_id),
                status=status_text,
            )

    found = await _bounded(read)
    if found is None:
        return pages.organization_search(visitor, f"no organization {organization_id} is known")
    return pages.organization(found, visitor)


@page
async def platforms(request: web.Request, visitor: Visitor) -> Markup:
    config, sessions = request.app[CONFIG], request.app[CLIENT].sessions
    after = _cursor(request, "held_after")

    def read() -> pages.Platforms:
        with sessions() as session:
            return pages.Platforms(
                health=platform_health.states(session),
                guards=held.guard_report(session, config.guard_windows, config.guard_thresholds),
                held=held.held_page(session, cursor=after),
                where=config.guard_windows.where,
                notice=_notice(request),
            )

    return pages.platforms(await _bounded(read), visitor)


_NOTICES = {
    ("released", "dropped"): "released {0} held changes; dropped {1} gone stale",
    ("discarded", "rechecked"): "discarded {0} held changes; checking {1} teams again",
}


def _notice(request: web.Request) -> str | None:
    """What the last button did, from the numbers its redirect carried."""
    for names, text in _NOTICES.items():
        values = [request.query.get(name, "") for name in names]
        if all(value == "0" or parse_integer(value, 10**9) for value in values):
            return text.format(*(int(value) for value in values))
    return None


# -- the guard's buttons -----------------------------------------------------------------


def _selection(form: MultiDictProxy[Any]) -> held.Selection:
    """The held changes a button names: one base URL's, or one team's."""
    base_url, team = form.get("base_url"), form.get("team")
    if isinstance(base_url, str) and base_url and team is None:
        try:
            return held.Selection(base_url=normalise_base_url(base_url))
        except BaseUrlError as exc:
            raise Refused(400, f"base_url: {exc}") from exc
    if is_team_id(team) and base_url is None:
        return held.Selection(team_ids=(team,))
    raise Refused(400, "a button names one base URL or one team")


@action
async def release(
    request: web.Request, visitor: Visitor, form: MultiDictProxy[Any]
) -> web.StreamResponse:
    """What `ogv changes release` does, audited as the signed-in token."""
    selection = _selection(form)
    client, config = request.app[CLIENT], request.app[CONFIG]

    def run() -> held.Released:
        with client.sessions.begin() as session:
            return held.release_audited(session, selection, visitor.caller.actor)

    released = await off_loop(run)
    held.log_released(released.changes)
    if config.status_webhooks and released.changes:
        ids = [change.id for change in released.changes]
        await off_loop(lambda: publish_notices(client.app, ids))
    return see_other(
        f"/console/platforms?released={len(released.changes)}&dropped={released.dropped}"
    )


@action
async def discard(
    request: web.Request, visitor: Visitor, form: MultiDictProxy[Any]
) -> web.StreamResponse:
    """What `ogv changes discard` does: drop the held changes, check those teams again."""
    selection = _selection(form)
    client, config = request.app[CLIENT], request.app[CONFIG]

    def run() -> tuple[int, int]:
        with client.sessions.begin() as session:
            asks = held.discard_audited(session, selection, visitor.caller.actor)
        rechecked = recheck.check_again(
            client.sessions,
            client.app,
            asks,
            requested_by=Requester.API,
            batch_size=config.batch_size,
        )
        return len(asks), rechecked

    discarded, rechecked = await off_loop(run)
    return see_other(f"/console/platforms?discarded={discarded}&rechecked={rechecked}")
