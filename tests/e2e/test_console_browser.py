"""The console as an operator uses it: a real `ogv api`, driven in headless Chromium.

The browser signs in (a read-only token is refused first), reads the fleet, an
organization and the platforms, releases a held change with its button, and is
refused when a form lacks its CSRF token. It reads the session cookie's flags as
the browser keeps them, checks that no page scrolls sideways at 390 pixels, and
leaves screenshots at 1280 and 390 pixels wide in artifacts/screenshots/.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait
from sqlalchemy import select

from models import AuditEvent, HeldChange, Team, TeamStatus
from models.db import session_factory
from tests.support.api import TOKEN, ApiProcess, api_env
from tests.support.browser import chromium
from tests.support.console import Fleet, seed
from tests.support.services import ARTIFACTS
from tests.support.stacks import service_env
from worker import access
from worker.checks.guard import RedisWindows
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.web.console.session import COOKIE

SHOTS = ARTIFACTS / "screenshots"
WIDTHS = (1280, 390)


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    redis_url: str,
    fernet_key: str,
    fake: FakeOpsgenie,
) -> Iterator[ApiProcess]:
    data = tmp_path_factory.mktemp("console-api")
    env = api_env(
        service_env(data, fake),
        OGV_DATABASE_URL=postgres_url,
        OGV_BROKER_URL=redis_url,
        OGV_ENCRYPTION_KEYS=fernet_key,
    )
    process = ApiProcess(env, data / "api.log").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def fleet(
    api: ApiProcess, postgres_url: str, redis_url: str, fernet_key: str, fake: FakeOpsgenie
) -> Fleet:
    # The guard's window in the Redis the API reads it from (OGV_BROKER_URL's), as workers
    # sharing that Redis would leave it.
    windows = RedisWindows(redis.Redis.from_url(redis_url), api.env["OGV_NAMESPACE"])
    return seed(postgres_url, fernet_key, fake, windows)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium(1280, 900) as driver:
        yield driver


def read_token(postgres_url: str) -> str:
    with session_factory(postgres_url).begin() as session:
        issued = access.create_token(
            session, f"reader-{uuid.uuid4().hex[:8]}", ["read"], actor="cli:test"
        )
    return issued.token


def shoot(browser: webdriver.Chrome, name: str) -> list[Path]:
    """The whole page at each width; at 390 it must not scroll sideways."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    taken = []
    for width in WIDTHS:
        browser.set_window_size(width, 900)
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(width, min(max(int(height) + 140, 600), 4000))
        overflow = browser.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} scrolls sideways by {overflow}px at {width}px"
        path = SHOTS / f"console-{name}-{width}.png"
        assert browser.save_screenshot(str(path))
        taken.append(path)
    browser.set_window_size(1280, 900)
    return taken


def shown(browser: webdriver.Chrome, css: str) -> WebElement:
    """The element once the page that has it is shown (a click's page may still load)."""
    return WebDriverWait(browser, 10).until(
        expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, css))
    )


def arrive(browser: webdriver.Chrome, url: str) -> None:
    WebDriverWait(browser, 10).until(expected_conditions.url_to_be(url))


def sign_in(browser: webdriver.Chrome, token: str) -> None:
    browser.find_element(By.ID, "token").send_keys(token)
    browser.find_element(By.CSS_SELECTOR, "form[action='/console/sign-in'] button").click()


def test_an_operator_signs_in_reads_every_page_and_releases_a_held_change(
    api: ApiProcess, fleet: Fleet, browser: webdriver.Chrome, postgres_url: str
) -> None:
    browser.get(f"{api.url}/console/fleet")
    assert browser.current_url == f"{api.url}/console/sign-in"
    shoot(browser, "sign-in")
    sign_in(browser, read_token(postgres_url))
    assert "lacks the operate scope" in shown(browser, ".error").text

    sign_in(browser, TOKEN)
    arrive(browser, f"{api.url}/console/fleet")
    cookie = browser.get_cookie(COOKIE)
    assert cookie is not None
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/console")
    assert TOKEN not in cookie["value"]
    assert browser.execute_script("return document.cookie") == ""  # no script can read it

    assert browser.find_element(By.CSS_SELECTOR, ".chart svg").is_displayed()
    assert "Organizations by failing teams" in browser.page_source
    shoot(browser, "fleet")

    browser.find_element(By.LINK_TEXT, "Organization").click()
    search = shown(browser, "#org")
    search.send_keys(str(fleet.busy.org))
    search.submit()
    teams = shown(browser, "table.teams").text
    assert "<script>alert('x')</script>&team" in teams  # shown as text, never run
    assert "days left" in browser.page_source
    shoot(browser, "organization")

    browser.find_element(By.LINK_TEXT, "Platforms").click()
    shown(browser, "table.held")
    assert fleet.unavailable_base_url in browser.page_source
    assert "tripped since" in browser.page_source
    shoot(browser, "platforms")
    released = fleet.held_teams[0]
    browser.find_element(
        By.CSS_SELECTOR, f"button[aria-label='release the change held for {released}']"
    ).click()
    assert "released 1 held changes" in shown(browser, ".notice").text
    shoot(browser, "released")

    with session_factory(postgres_url)() as session:
        status = session.scalar(select(Team.status).where(Team.id == released))
        still_held = session.scalar(select(HeldChange.id).where(HeldChange.team_id == released))
        actor = session.scalar(
            select(AuditEvent.actor)
            .where(AuditEvent.action == "changes.release")
            .order_by(AuditEvent.id.desc())
        )
    assert (status, still_held, actor) == (TeamStatus.INVALID_KEY, None, "token:OGV_API_TOKEN")


def test_a_form_without_its_csrf_token_is_refused_in_the_browser(
    api: ApiProcess, fleet: Fleet, browser: webdriver.Chrome, postgres_url: str
) -> None:
    browser.get(f"{api.url}/console/sign-in")
    sign_in(browser, TOKEN)
    arrive(browser, f"{api.url}/console/fleet")
    browser.get(f"{api.url}/console/platforms")
    target = fleet.held_teams[1]
    button = f"button[aria-label='discard the change held for {target}']"
    browser.execute_script(
        "arguments[0].form.querySelector(\"input[name='csrf']\").remove()",
        browser.find_element(By.CSS_SELECTOR, button),
    )
    browser.find_element(By.CSS_SELECTOR, button).click()
    assert "did not come from the console" in shown(browser, ".error").text
    with session_factory(postgres_url)() as session:
        assert session.scalar(select(HeldChange.id).where(HeldChange.team_id == target))

    browser.get(f"{api.url}/console/platforms")
    signed_in = browser.get_cookie(COOKIE)
    browser.find_element(By.CSS_SELECTOR, "header.top form button").click()  # sign out
    arrive(browser, f"{api.url}/console/sign-in")
    after = browser.get_cookie(COOKIE)  # the sign-in form's session, signed in to nothing
    assert signed_in is not None and after is not None and after["value"] != signed_in["value"]
    browser.get(f"{api.url}/console/fleet")
    assert browser.current_url == f"{api.url}/console/sign-in"
