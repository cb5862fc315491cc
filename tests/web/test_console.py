"""The console in-process (aiohttp's test client): signing in, the cookie, CSRF, escaping,
and the guard's buttons, on a seeded fleet in PostgreSQL (tests/support/console.py)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from models import AuditEvent, HeldChange, Team, TeamStatus, ValidationRequest
from models.db import session_factory
from tests.support.api import TOKEN
from tests.support.console import HOSTILE_LABEL, Fleet, seed
from worker import access
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.web.api import build_app
from worker.web.client import ValidationClient
from worker.web.config import ApiConfig
from worker.web.console.session import COOKIE, LIFETIME, SessionKeys

CSRF = re.compile(r"name='csrf' value='([^']+)'")


@pytest.fixture(scope="module")
def client(postgres_url: str, redis_url: str) -> Iterator[ValidationClient]:
    with ValidationClient(redis_url, postgres_url, queue=f"console-{uuid.uuid4().hex}") as made:
        yield made


@pytest.fixture
def fleet(postgres_url: str, fernet_key: str, fake: FakeOpsgenie) -> Fleet:
    return seed(postgres_url, fernet_key, fake)


def run(
    client: ValidationClient, scenario: Callable[[TestClient[Any, Any]], Awaitable[None]]
) -> None:
    """`scenario` against the API's app, served by aiohttp's test server."""
    config = ApiConfig(token=TOKEN, max_wait=0.02, token_cache_seconds=0)

    async def main() -> None:
        async with TestClient(TestServer(build_app(client, config))) as browser:
            await scenario(browser)

    asyncio.run(main())


def origin(browser: TestClient[Any, Any]) -> dict[str, str]:
    return {"Origin": str(browser.make_url("")).rstrip("/")}


async def csrf_of(response: ClientResponse) -> str:
    found = CSRF.search(await response.text())
    assert found is not None
    return found.group(1)


async def signed_in(browser: TestClient[Any, Any], token: str = TOKEN) -> str:
    """Sign in as a browser does; the CSRF token of the signed-in pages."""
    form = await browser.get("/console/sign-in")
    sent = await browser.post(
        "/console/sign-in",
        data={"csrf": await csrf_of(form), "token": token},
        headers=origin(browser),
        allow_redirects=False,
    )
    assert (sent.status, sent.headers["Location"]) == (303, "/console/fleet")
    return await csrf_of(await browser.get("/console/platforms"))


def operate_token(postgres_url: str, *scopes: str, orgs: tuple[int, ...] = ()) -> tuple[str, str]:
    name = f"console-{uuid.uuid4().hex[:8]}"
    with session_factory(postgres_url).begin() as session:
        issued = access.create_token(
            session, name, list(scopes), organizations=orgs, actor="cli:test"
        )
    return name, issued.token


# -- the session cookie ------------------------------------------------------------------


def test_a_session_cookie_is_signed_and_expires() -> None:
    keys = SessionKeys([b"k" * 32])
    session, cookie = keys.issue("a" * 64, now=1000)
    assert keys.read(cookie, now=1000) == session
    assert session.expires == 1000 + LIFETIME
    assert keys.read(cookie, now=1000 + LIFETIME) is None  # expired
    sid, hashed, expires, signature = cookie.split(".")
    assert keys.read(f"{sid}.{'b' * 64}.{expires}.{signature}", now=1000) is None  # tampered
    assert keys.read(f"{sid}.{hashed}.{int(expires) + 1}.{signature}", now=1000) is None
    assert SessionKeys([b"x" * 32]).read(cookie, now=1000) is None  # another deployment's
    assert SessionKeys([b"x" * 32, b"k" * 32]).read(cookie, now=1000) == session  # rotated
    for junk in ["", "a.b.c", "é" * 10, cookie + ".x", cookie.replace(".", "..", 1)]:
        assert keys.read(junk, now=1000) is None


def test_a_csrf_token_belongs_to_its_session() -> None:
    keys = SessionKeys([b"k" * 32])
    mine, _ = keys.issue(None, now=1000)
    theirs, _ = keys.issue(None, now=1000)
    assert keys.csrf_matches(mine, keys.csrf(mine))
    assert not keys.csrf_matches(mine, keys.csrf(theirs))
    assert not keys.csrf_matches(mine, "")
    assert not keys.csrf_matches(mine, "é")


# -- signing in --------------------------------------------------------------------------


def test_pages_ask_to_sign_in_first(client: ValidationClient) -> None:
    async def scenario(browser: TestClient[Any, Any]) -> None:
        for path in ("/console", "/console/fleet", "/console/organization", "/console/platforms"):
            answer = await browser.get(path, allow_redirects=False)
            assert answer.status == 303, path
        answer = await browser.get("/console/fleet", allow_redirects=False)
        assert answer.headers["Location"] == "/console/sign-in"
        # The API's own routes still want a bearer token.
        assert (await browser.get("/v1/guard")).status == 401

    run(client, scenario)


def test_signing_in_sets_a_strict_http_only_cookie_without_the_token(
    client: ValidationClient, fleet: Fleet
) -> None:
    async def scenario(browser: TestClient[Any, Any]) -> None:
        form = await browser.get("/console/sign-in")
        sent = await browser.post(
            "/console/sign-in",
            data={"csrf": await csrf_of(form), "token": TOKEN},
            headers=origin(browser),
            allow_redirects=False,
        )
        cookie = sent.cookies[COOKIE]
        assert sent.status == 303
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert cookie["path"] == "/console"
        assert not cookie["secure"]  # plain HTTP here
        assert TOKEN not in cookie.value and TOKEN not in sent.headers["Set-Cookie"]
        page = await browser.get("/console/fleet")
        text = await page.text()
        assert page.status == 200
        assert "Fleet" in text and TOKEN not in text
        assert "script-src" not in page.headers["Content-Security-Policy"]
        assert page.headers["X-Frame-Options"] == "DENY"
        assert page.headers["Cache-Control"] == "no-store"

    run(client, scenario)


def test_the_cookie_is_secure_behind_https(client: ValidationClient) -> None:
    async def scenario(browser: TestClient[Any, Any]) -> None:
        proxied = {"X-Forwarded-Proto": "https"}
        form = await browser.get("/console/sign-in", headers=proxied)
        assert "Secure" in form.headers["Set-Cookie"]
        host = browser.make_url("").host
        # A Secure cookie is not sent over plain HTTP, as in a browser: here it is, by hand.
        session = form.cookies[COOKIE].value
        sent = await browser.post(
            "/console/sign-in",
            data={"csrf": await csrf_of(form), "token": TOKEN},
            headers={
                **proxied,
                "Origin": f"https://{host}:{browser.port}",
                "Cookie": f"{COOKIE}={session}",
            },
            allow_redirects=False,
        )
        assert sent.status == 303
        assert sent.cookies[COOKIE]["secure"] is True

    run(client, scenario)


@pytest.mark.parametrize(
    ("scopes", "limited", "status", "message"),
    [
        (None, False, 401, "that token is not valid"),
        (("read",), False, 403, "lacks the operate scope"),
        (("validate",), False, 403, "lacks the operate scope"),
        (("operate",), True, 403, "limited to some organizations"),
    ],
)
def test_a_token_that_may_not_operate_everything_is_refused(
    client: ValidationClient,
    postgres_url: str,
    fleet: Fleet,
    scopes: tuple[str, ...] | None,
    limited: bool,
    status: int,
    message: str,
) -> None:
    if scopes is None:
        token = access.new_token()  # well-formed, never issued
    else:
        orgs = (fleet.busy.org,) if limited else ()
        _, token = operate_token(postgres_url, *scopes, orgs=orgs)

    async def scenario(browser: TestClient[Any, Any]) -> None:
        form = await browser.get("/console/sign-in")
        sent = await browser.post(
            "/console/sign-in",
            data={"csrf": await csrf_of(form), "token": token},
            headers=origin(browser),
            allow_redirects=False,
        )
        text = await sent.text()
        assert sent.status == status
        assert message in text and token not in text
        after = await browser.get("/console/fleet", allow_redirects=False)
        assert after.status == 303

    run(client, scenario)


def test_a_revoked_token_ends_its_sessions(client: ValidationClient, postgres_url: str) -> None:
    name, token = operate_token(postgres_url, "operate")

    async def scenario(browser: TestClient[Any, Any]) -> None:
        await signed_in(browser, token)
        assert (await browser.get("/console/fleet", allow_redirects=False)).status == 200
        with session_factory(postgres_url).begin() as session:
            access.revoke_token(session, name, actor="cli:test")
        assert (await browser.get("/console/fleet", allow_redirects=False)).status == 303

    run(client, scenario)


def test_signing_out_forgets_the_session(client: ValidationClient) -> None:
    async def scenario(browser: TestClient[Any, Any]) -> None:
        csrf = await signed_in(browser)
        out = await browser.post(
            "/console/sign-out", data={"csrf": csrf}, headers=origin(browser), allow_redirects=False
        )
        assert (out.status, out.headers["Location"]) == (303, "/console/sign-in")
        assert out.cookies[COOKIE].value == ""
        assert (await browser.get("/console/fleet", allow_redirects=False)).status == 303

    run(client, scenario)


# -- CSRF and Origin ---------------------------------------------------------------------


def held_teams(postgres_url: str, fleet: Fleet) -> list[str]:
    with session_factory(postgres_url)() as session:
        return sorted(
            session.scalars(
                select(HeldChange.team_id).where(HeldChange.team_id.in_(fleet.held_teams))
            )
        )


def test_a_post_without_the_sessions_csrf_token_or_from_elsewhere_is_refused(
    client: ValidationClient, postgres_url: str, fleet: Fleet
) -> None:
    team = fleet.held_teams[0]

    async def scenario(browser: TestClient[Any, Any]) -> None:
        csrf = await signed_in(browser)
        async with TestClient(TestServer(build_app(client, ApiConfig(TOKEN, 0.02)))) as other:
            their_csrf = await csrf_of(await other.get("/console/sign-in"))
        attempts = [
            ({"team": team}, origin(browser)),  # no token
            ({"team": team, "csrf": "x" * 43}, origin(browser)),  # a wrong one
            ({"team": team, "csrf": their_csrf}, origin(browser)),  # another session's
            ({"team": team, "csrf": csrf}, {"Origin": "https://evil.example"}),
            ({"team": team, "csrf": csrf}, {"Origin": "null"}),
            ({"team": team, "csrf": csrf}, {"Referer": "https://evil.example/console"}),
            ({"team": team, "csrf": csrf}, {}),  # neither Origin nor Referer
        ]
        for data, headers in attempts:
            for action in ("release", "discard"):
                answer = await browser.post(
                    f"/console/changes/{action}", data=data, headers=headers, allow_redirects=False
                )
                assert answer.status == 403, (action, data, headers)
        sign_in = await browser.post(
            "/console/sign-in",
            data={"token": TOKEN},
            headers=origin(browser),
            allow_redirects=False,
        )
        assert sign_in.status == 403

    run(client, scenario)
    assert held_teams(postgres_url, fleet) == sorted(fleet.held_teams)


# -- the pages ---------------------------------------------------------------------------


def test_every_page_escapes_what_it_shows(client: ValidationClient, fleet: Fleet) -> None:
    async def scenario(browser: TestClient[Any, Any]) -> None:
        await signed_in(browser)
        page = await browser.get(f"/console/organization?id={fleet.busy.org}")
        text = await page.text()
        assert page.status == 200
        assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;team" in text
        assert "<script" not in text
        for key in fleet.busy.keys.values():
            assert key not in text
        for status in TeamStatus:
            assert f"status s-{status.value}" in text
        assert "Key is invalid" not in text  # held evidence is on the platforms page only
        assert HOSTILE_LABEL not in text

    run(client, scenario)


def test_the_pages_show_the_fleet(client: ValidationClient, fleet: Fleet) -> None:
    async def scenario(browser: TestClient[Any, Any]) -> None:
        await signed_in(browser)
        fleet_page = await (await browser.get("/console/fleet")).text()
        platforms = await (await browser.get("/console/platforms")).text()
        organization = await (
            await browser.get(f"/console/organization?id={fleet.busy.org}")
        ).text()
        missing = await (await browser.get("/console/organization?id=999999999999")).text()
        bad = await browser.get("/console/organization?id=12x")
        bad_cursor = await browser.get("/console/fleet?orgs_after=%25%25")
        assert "<svg" in fleet_page and "status changes per day over the last 30 days" in fleet_page
        assert f"/console/organization?id={fleet.busy.org}" in fleet_page
        assert fleet.unavailable_base_url in platforms and "unavailable since" in platforms
        assert "tripped since" in platforms and fleet.held_base_url in platforms
        for team in fleet.held_teams:
            assert f"value='{team}'" in platforms
        assert "days left" in organization and "what to do" in organization
        assert "no organization 999999999999 is known" in missing
        assert bad.status == 200 and "a whole number" in await bad.text()
        assert bad_cursor.status == 400

    run(client, scenario)


def test_release_and_discard_do_what_the_cli_does_audited_as_the_token(
    client: ValidationClient, postgres_url: str, fleet: Fleet
) -> None:
    released, discarded = fleet.held_teams
    name, token = operate_token(postgres_url, "operate")

    async def scenario(browser: TestClient[Any, Any]) -> None:
        csrf = await signed_in(browser, token)
        one = await browser.post(
            "/console/changes/release",
            data={"csrf": csrf, "team": released},
            headers=origin(browser),
            allow_redirects=False,
        )
        assert (one.status, one.headers["Location"]) == (
            303,
            "/console/platforms?released=1&dropped=0",
        )
        two = await browser.post(
            "/console/changes/discard",
            data={"csrf": csrf, "team": discarded},
            headers=origin(browser),
        )
        assert "discarded 1 held changes; checking 1 teams again" in await two.text()

    run(client, scenario)
    with session_factory(postgres_url)() as session:
        statuses = dict(
            session.execute(select(Team.id, Team.status).where(Team.id.in_(fleet.held_teams))).all()
        )
        events = session.execute(
            select(AuditEvent.actor, AuditEvent.action, AuditEvent.target)
            .where(AuditEvent.actor == f"token:{name}")
            .order_by(AuditEvent.id)
        ).all()
        pending = session.scalars(
            select(ValidationRequest.team_id).where(ValidationRequest.team_id == discarded)
        ).all()
    assert held_teams(postgres_url, fleet) == []
    assert statuses == {released: TeamStatus.INVALID_KEY, discarded: TeamStatus.VALID}
    assert [tuple(e) for e in events] == [
        (f"token:{name}", "changes.release", "1 teams"),
        (f"token:{name}", "changes.discard", "1 teams"),
    ]
    assert pending == [discarded]
