"""What the monitoring tests share: a watched stack, Flower as a real process, HTTP.

A watched stack is the conftest Redis/PostgreSQL stack whose worker serves
/metrics on a free port. Flower runs as the documented `ogv flower` command.
"""

from __future__ import annotations

import base64
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.orm import Session

from models import Requester
from models.crypto import KeyVault
from tests.support.ports import free_port
from tests.support.services import ARTIFACTS, NAMESPACE
from tests.support.stacks import Stack, ogv_command, open_stack
from worker import inventory
from worker.enqueue import RequestView
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.client import ValidationClient

FLOWER_USER = "operator"
FLOWER_PASSWORD = f"pw-{uuid.uuid4().hex[:16]}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""Prometheus samples by (sample name, labels)."""


def watched_stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpsgenie,
) -> Stack:
    """The Redis/PostgreSQL stack, its worker serving /metrics on 127.0.0.1.

    It has a queue of its own: a module's other stacks may still be running, and a
    check they consumed would be missing from this worker's log and metrics.
    """
    return open_stack(
        "redis-postgres",
        request,
        tmp_path_factory,
        fake,
        OGV_NAMESPACE=f"{NAMESPACE}-watched",
        OGV_METRICS_PORT=str(free_port()),
        OGV_METRICS_ADDRESS="127.0.0.1",
        OGV_FLOWER_BASIC_AUTH=f"{FLOWER_USER}:{FLOWER_PASSWORD}",
    )


def install_direct(
    stack: Stack, fake: FakeOpsgenie, cases: dict[str, KeyScenario]
) -> dict[str, Any]:
    """What `tests.support.stacks.install` makes through the CLI, written directly (faster)."""
    org = uuid.uuid4().int % 10**9 + 1
    keys = {label: f"key-{uuid.uuid4()}" for label in cases}
    vault = KeyVault([stack.env["OGV_ENCRYPTION_KEYS"].encode()])
    engine = create_engine(stack.env["OGV_DATABASE_URL"])
    with Session(engine) as session, session.begin():
        integration, _ = inventory.add_integration(
            session,
            organization_id=org,
            account_name=f"acct-{org}",
            base_url=fake.url,
            allowed_base_urls=[fake.url],
        )
        teams = {
            label: inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration.id,
                label=label,
                integration_key=keys[label],
                vault=vault,
            ).id
            for label in cases
        }
        integration_id = integration.id
    engine.dispose()
    for label, scenario in cases.items():
        fake.set_key(keys[label], scenario)
    return {"org": org, "integration": integration_id, "teams": teams, "keys": keys}


def check_all(
    stack: Stack, jobs: dict[str, tuple[int, int, str]], timeout: float = 30
) -> dict[str, RequestView]:
    """Ask for every check at once, in this process (a producer's way in), and wait."""
    with (
        ValidationClient(
            stack.env["OGV_BROKER_URL"],
            stack.env["OGV_DATABASE_URL"],
            queue=stack.env["OGV_NAMESPACE"],
            requested_by=Requester.CLI,
        ) as client,
        ThreadPoolExecutor(len(jobs)) as pool,
    ):
        views = pool.map(lambda job: client.request_and_wait(*job, timeout=timeout), jobs.values())
        done = dict(zip(jobs, views, strict=True))
    assert all(view.is_final for view in done.values()), done
    return done


def basic_auth(user: str = FLOWER_USER, password: str = FLOWER_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_get(url: str, authorization: str | None = None, timeout: float = 10) -> tuple[int, str]:
    """GET `url`: the status and body, also for error statuses."""
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def metrics_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.env['OGV_METRICS_PORT']}/metrics"


def scrape(stack: Stack) -> tuple[str, Samples]:
    """The worker's metrics page, and its samples."""
    status, page = http_get(metrics_url(stack))
    assert status == 200, page
    samples: Samples = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return page, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Flower:
    """A running `ogv flower` process."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api_tasks(self) -> str:
        status, body = http_get(f"{self.url}/api/tasks", basic_auth())
        assert status == 200, body
        return body


@contextmanager
def running_flower(stack: Stack, timeout: float = 30) -> Iterator[Flower]:
    """`ogv flower` on a free port, with the stack's environment; stopped afterwards."""
    port = free_port()
    log_path = ARTIFACTS / "logs" / f"flower-{uuid.uuid4().hex[:8]}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*ogv_command(), "flower", "--port", str(port)],
            env=stack.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    flower = Flower(f"http://127.0.0.1:{port}", log_path, process)
    try:
        _wait_until_up(flower, timeout)
        yield flower
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_up(flower: Flower, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert flower.process.poll() is None, f"Flower exited: {flower.log()[-2000:]}"
        try:
            http_get(f"{flower.url}/healthcheck", timeout=1)
        except OSError:
            time.sleep(0.1)
            continue
        if "Connected to" in flower.log():  # its event receiver is on the broker
            return
        time.sleep(0.1)
    raise AssertionError(f"Flower did not start in {timeout}s: {flower.log()[-2000:]}")
