"""Who is looking at the console, and whether a form came from it.

A visitor is signed in when the session cookie (worker/web/console/session.py) is
genuine and unexpired and the token it names is still live with the operate
scope for every organization (`console_refusal`): the console shows the whole
fleet and acts on it. Without OGV_API_TOKEN (--insecure-local) everyone may, as
on the API. A POST is accepted only from the console's own pages: its Origin (or,
lacking one, its Referer) must be this site, and its CSRF token that of the
session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from worker.access import LOCAL, MISS, Caller, Scope
from worker.web.config import CONFIG, VERIFIER
from worker.web.console.session import COOKIE, LIFETIME, ConsoleSession, SessionKeys
from worker.web.errors import off_loop

CONSOLE_SCOPE = Scope.OPERATE
SESSION_KEYS = web.AppKey("console_sessions", SessionKeys)


@dataclass(frozen=True)
class Visitor:
    """A signed-in visitor: the session, who the token belongs to, and the forms' CSRF."""

    session: ConsoleSession
    caller: Caller
    csrf: str


class Refused(Exception):
    """Raised when a request may not go on; `status` and a one-line `message` say why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def console_refusal(caller: Caller | None) -> str | None:
    """Why this caller may not use the console, or None when it may."""
    if caller is None:
        return "that token is not valid: unknown, revoked or expired"
    if not caller.allows(CONSOLE_SCOPE):
        return f"that token lacks the {CONSOLE_SCOPE.value} scope the console needs"
    if caller.organizations is not None:
        return "that token is limited to some organizations; the console needs one for all"
    return None


def open_access(request: web.Request) -> bool:
    """The API runs without tokens (--insecure-local): everyone may use the console."""
    return request.app[CONFIG].token is None


def current_session(request: web.Request) -> ConsoleSession | None:
    return request.app[SESSION_KEYS].read(request.cookies.get(COOKIE), time.time())


async def caller_of(request: web.Request, session: ConsoleSession) -> Caller | None:
    """Who the session's token belongs to now (None: signed out, revoked, expired)."""
    if open_access(request):
        return LOCAL
    if session.token_hash is None:
        return None
    verifier = request.app[VERIFIER]
    hashed = session.token_hash
    known = verifier.cached_hash(hashed)
    if known is MISS:
        return await off_loop(lambda: verifier.verify_hash(hashed))
    return known if isinstance(known, Caller) else None


async def visitor(request: web.Request) -> Visitor | None:
    """The signed-in visitor of this request, or None."""
    session = current_session(request)
    if session is None:
        return None
    caller = await caller_of(request, session)
    if console_refusal(caller) is not None or caller is None:
        return None
    return Visitor(session, caller, request.app[SESSION_KEYS].csrf(session))


# -- the cookie -------------------------------------------------------------------------


def is_https(request: web.Request) -> bool:
    """The browser reached us over HTTPS: directly, or through a proxy that says so."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def set_session_cookie(request: web.Request, response: web.StreamResponse, value: str) -> None:
    """HttpOnly (no script reads it), SameSite=Strict (no other site sends it), Secure
    over HTTPS, for the console's paths only."""
    response.set_cookie(
        COOKIE,
        value,
        max_age=LIFETIME,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    response.set_cookie(
        COOKIE,
        "",
        max_age=0,
        path="/console",
        httponly=True,
        samesite="Strict",
        secure=is_https(request),
    )


# -- forms ------------------------------------------------------------------------------


def _origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def own_origin(request: web.Request) -> str:
    """This site's origin as the browser sees it (a proxy's X-Forwarded-Host, if any)."""
    host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip() or request.host
    return f"{'https' if is_https(request) else 'http'}://{host}".lower()


def check_origin(request: web.Request) -> None:
    """Refuse a POST that does not say it comes from this site."""
    sent = request.headers.get("Origin")
    origin = _origin_of(sent) if sent and sent != "null" else None
    if origin is None and not sent:
        origin = _origin_of(request.headers.get("Referer", ""))
    if origin != own_origin(request):
        raise Refused(403, "this form was not sent from the console's own page")


def check_csrf(request: web.Request, session: ConsoleSession | None, given: object) -> None:
    """Refuse a POST without the session's CSRF token."""
    keys = request.app[SESSION_KEYS]
    if session is None or not isinstance(given, str) or not keys.csrf_matches(session, given):
        raise Refused(403, "the form has expired or did not come from the console; reload it")
