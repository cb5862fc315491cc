"""Flower as an operator sees it: `ogv flower` on Redis and on RabbitMQ, in headless Chromium.

A prefork worker runs a few checks while Flower watches the broker's events; the
browser logs in with basic auth, finds every validation task on the tasks page in
its final state, and leaves a screenshot in the artifacts. Without credentials
Flower answers 401, and its task API shows ids, never a key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.support.monitoring import (
    FLOWER_PASSWORD,
    FLOWER_USER,
    Flower,
    basic_auth,
    http_get,
    install_direct,
    running_flower,
)
from tests.support.services import ARTIFACTS, NAMESPACE, require
from tests.support.stacks import Stack, ogv_command, open_stack, service_env, validate
from worker.operations.flower import plan, run
from worker.settings import Settings
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1680,900",
)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    require(
        "Chromium (apt-get install chromium chromium-driver)",
        FileNotFoundError(f"no {' or '.join(missing)}") if missing else None,
    )
    profile = tempfile.mkdtemp(prefix="ogv-chromium-")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager must not try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def log_in(driver: webdriver.Chrome) -> None:
    """Basic auth for every request of the page, its AJAX calls included."""
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.setExtraHTTPHeaders", {"headers": {"Authorization": basic_auth()}}
    )


def run_validations(stack: Stack, fake: FakeOpsgenie) -> dict[str, Any]:
    account = install_direct(
        stack,
        fake,
        {
            "payments": KeyScenario("valid"),
            "revoked": KeyScenario("invalid_key"),
            "flaky": KeyScenario("server_error", times=1),
        },
    )
    jobs = list(account["teams"].values())
    with ThreadPoolExecutor(len(jobs)) as pool:
        views = list(
            pool.map(
                lambda team: validate(stack, account["org"], account["integration"], team), jobs
            )
        )
    account["requests"] = {view["team_id"]: view for view in views}
    return account


def request_id_in(args: str) -> str | None:
    """The request id in a task's args as Flower shows them: `(request=<id>)` when
    published, `('<id>',)` once Celery re-sent it for a retry."""
    found = UUID.search(args)
    return found.group(0) if found else None


def tasks_by_request(api_tasks: str) -> dict[str, dict[str, Any]]:
    """Flower's /api/tasks, keyed by the request id each task was published with."""
    tasks: dict[str, dict[str, Any]] = {}
    for task in json.loads(api_tasks).values():
        request_id = request_id_in(task.get("args") or "")
        if task["name"] == "ogv.validate_request" and request_id:
            tasks[request_id] = task
    return tasks


def wait_for_final_states(flower: Flower, request_ids: set[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = tasks_by_request(flower.api_tasks())
        if all(tasks.get(rid, {}).get("state") == "SUCCESS" for rid in request_ids):
            return
        time.sleep(0.2)
    raise AssertionError(f"Flower has not seen every task finish: {flower.api_tasks()}")


def test_ogv_flower_refuses_to_start_without_credentials(
    tmp_path: Path, fake: FakeOpsgenie
) -> None:
    env = service_env(tmp_path, fake)
    done = subprocess.run(
        [*ogv_command(), "flower", "--port", "1"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "OGV_FLOWER_BASIC_AUTH is not set" in " ".join(done.stderr.split())
    local = subprocess.run(
        [*ogv_command(), "flower", "--insecure-local", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert local.returncode == 1
    assert "127.0.0.1 only" in " ".join(local.stderr.split())


def test_credentials_reach_flower_by_environment_not_argv() -> None:
    settings = Settings(flower_basic_auth="ops:s3cret-pw-of-20ch")
    authenticated = plan(settings, port=5555, host="0.0.0.0", insecure_local=False)
    assert authenticated.basic_auth == "ops:s3cret-pw-of-20ch"
    assert not any("s3cret-pw" in arg for arg in authenticated.argv)
    assert "s3cret-pw" not in repr(authenticated)
    local = plan(Settings(), port=5555, host="127.0.0.1", insecure_local=True)
    assert (local.basic_auth, "--address=127.0.0.1" in local.argv) == (None, True)


def test_without_credentials_flower_answers_401(flower: Flower) -> None:
    for path in ("/", "/tasks", "/api/tasks", "/api/workers"):
        assert http_get(flower.url + path)[0] == 401, path
        assert http_get(flower.url + path, basic_auth(password="wrong"))[0] == 401, path
    assert http_get(flower.url + "/tasks", basic_auth())[0] == 200


@pytest.fixture(scope="module")
def watched_rabbitmq(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, fake: FakeOpsgenie
) -> Iterator[Stack]:
    """A stack on RabbitMQ (quorum queue, Redis for pacing) whose worker sends events."""
    stack = open_stack(
        "rabbitmq-postgres",
        request,
        tmp_path_factory,
        fake,
        OGV_NAMESPACE=f"{NAMESPACE}-watched-amqp",
        OGV_FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}",
    )
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def flower_on_rabbitmq(watched_rabbitmq: Stack) -> Iterator[Flower]:
    """`ogv flower` on RabbitMQ: it receives the events through the broker's exchange."""
    with running_flower(watched_rabbitmq) as running:
        yield running


def test_the_browser_finds_the_validation_tasks_in_their_final_states(
    watched: Stack, fake: FakeOpsgenie, flower: Flower, browser: webdriver.Chrome
) -> None:
    browse_the_tasks(watched, fake, flower, browser, "flower-tasks.png")


def test_on_rabbitmq_the_browser_finds_the_validation_tasks_too(
    watched_rabbitmq: Stack,
    fake: FakeOpsgenie,
    flower_on_rabbitmq: Flower,
    browser: webdriver.Chrome,
) -> None:
    browse_the_tasks(
        watched_rabbitmq, fake, flower_on_rabbitmq, browser, "flower-tasks-rabbitmq.png"
    )


def browse_the_tasks(
    watched: Stack, fake: FakeOpsgenie, flower: Flower, browser: webdriver.Chrome, screenshot: str
) -> None:
    """Run three checks, then find each in Flower's tasks page, finished, with no key."""
    account = run_validations(watched, fake)
    request_ids = {view["id"] for view in account["requests"].values()}
    wait_for_final_states(flower, request_ids)

    tasks = tasks_by_request(flower.api_tasks())
    task_ids = {tasks[request_id]["uuid"]: request_id for request_id in request_ids}

    log_in(browser)
    browser.get(f"{flower.url}/tasks")
    shot = ARTIFACTS / "screenshots" / screenshot
    shot.parent.mkdir(parents=True, exist_ok=True)
    try:
        rows = wait_for_rows(browser, set(task_ids))
    finally:  # what the browser showed, also when the rows never came
        assert browser.save_screenshot(str(shot))

    shown = {task_ids[tid]: (rows[tid]["name"], rows[tid]["state"]) for tid in task_ids}
    assert shown == dict.fromkeys(request_ids, ("ogv.validate_request", "SUCCESS"))
    assert all(request_id_in(rows[tid]["args"]) == task_ids[tid] for tid in task_ids)
    seen = flower.api_tasks() + browser.page_source
    assert [key for key in account["keys"].values() if key in seen] == []


def wait_for_rows(
    driver: webdriver.Chrome, task_ids: set[str], timeout: float = 20
) -> dict[str, dict[str, str]]:
    """The tasks table's rows by task id, once every task shows a final state."""
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, str]] = {}
    while time.monotonic() < deadline:
        rows = read_rows(driver)
        if all(rows.get(task_id, {}).get("state") == "SUCCESS" for task_id in task_ids):
            return rows
        time.sleep(0.3)
    raise AssertionError(f"the tasks page never showed every task finished: {rows}")


def read_rows(driver: webdriver.Chrome) -> dict[str, dict[str, str]]:
    """Each row's cells by column, keyed by the row's id (Flower uses the task id)."""
    columns = [
        th.get_attribute("data-column") or ""
        for th in driver.find_elements(By.CSS_SELECTOR, "#tasks-table thead th")
    ]
    return {
        tr.get_attribute("id") or "": dict(
            zip(columns, (td.text for td in tr.find_elements(By.TAG_NAME, "td")), strict=False)
        )
        for tr in driver.find_elements(By.CSS_SELECTOR, "#tasks-table tbody tr")
    }


def test_flower_starts_with_no_inherited_flower_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWER_UNAUTHENTICATED_API", "true")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "someone:else-entirely-1234")
    seen: dict[str, str] = {}
    app = SimpleNamespace(start=lambda argv: seen.update(os.environ))
    local = plan(Settings(), port=5555, host="127.0.0.1", insecure_local=True)

    run(app, local)  # type: ignore[arg-type]

    assert [name for name in seen if name.startswith("FLOWER_")] == []


def test_beat_keeps_its_schedule_under_the_data_dir(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OGV_")}
    env["OGV_DATA_DIR"] = str(tmp_path)
    code = "import celeryconfig; print(celeryconfig.beat_schedule_filename)"

    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)

    assert done.stdout.strip() == str(tmp_path / "celerybeat-schedule"), done.stderr


def test_flower_expects_events_on_redis_and_rabbitmq_not_on_the_embedded_broker() -> None:
    def sees(broker_url: str) -> bool:
        settings = Settings(broker_url=broker_url)
        return plan(settings, port=5555, host="127.0.0.1", insecure_local=True).sees_events

    assert sees("redis://127.0.0.1:6379/0")
    assert sees("amqp://guest:guest@127.0.0.1:5672//")
    assert not sees("embedded")
