"""`ogv api`'s access log: one `api.request` line per request, never a header.

Each line has the method, the route, the path of an answered request (a refused one
may carry a key where an id belongs, so it has none), the status and the latency
in ms. Read from a real process's JSON log, and formatted by the text formatter.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.api import JSON, TOKEN, ApiProcess, ApiThread, api_env, call, exchange
from tests.support.services import NAMESPACE
from tests.support.stacks import service_env
from worker.logs import TextFormatter
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient

KEY = "eb" + str(uuid.uuid4())[2:]
FIELDS = ("method", "route", "path", "status", "error")


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpsgenie,
    postgres_url: str,
    redis_url: str,
    fernet_key: str,
) -> Iterator[ApiProcess]:
    data_dir = tmp_path_factory.mktemp("api")
    env = service_env(
        data_dir,
        fake,
        OGV_DATABASE_URL=postgres_url,
        OGV_BROKER_URL=redis_url,
        OGV_ENCRYPTION_KEYS=fernet_key,
        OGV_LOG_FORMAT="json",
    )
    server = ApiProcess(api_env(env), data_dir / "api.log").start()
    yield server
    server.stop()


def access_lines(server: ApiProcess, seen: int, count: int) -> list[dict[str, Any]]:
    """The `api.request` records past offset `seen`, once there are `count` of them."""
    deadline = time.monotonic() + 10
    while True:
        records = [
            json.loads(line)
            for line in server.log_path.read_text()[seen:].splitlines()
            if '"api.request"' in line
        ]
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.02)


def test_each_request_is_one_line_with_its_route_status_and_latency(api: ApiProcess) -> None:
    seen = len(api.log_path.read_text())
    team = f"1-nobody-{uuid.uuid4().hex}"
    body = {"organization_id": 1, "integration_id": 1, "team_id": team}

    call(api.url, "GET", "/healthz", auth=False)
    posted = call(api.url, "POST", "/v1/validations", body=body)
    call(api.url, "GET", posted.headers["location"])
    call(api.url, "GET", f"/v1/teams/{quote(team)}")
    call(api.url, "GET", f"/v1/teams/{KEY}")
    call(api.url, "GET", f"/v1/organizations/1/teams?cursor={KEY}", auth=False)
    call(api.url, "GET", f"/v1/nowhere/{KEY}")
    call(api.url, "DELETE", "/v1/validations", headers=JSON)
    exchange(
        api.url, b"GET / HTTP/1.1\r\nAuthorization: Bearer " + TOKEN.encode() + b"\x01\r\n\r\n"
    )
    records = access_lines(api, seen, 9)

    assert [{name: r.get(name) for name in FIELDS} for r in records] == [
        line("GET", "/healthz", "/healthz", 200),
        line("POST", "/v1/validations", "/v1/validations", 202),
        line("GET", "/v1/validations/{request_id}", posted.headers["location"], 200),
        line("GET", "/v1/teams/{team_id}", None, 404),
        line("GET", "/v1/teams/{team_id}", None, 422),
        line("GET", "/v1/organizations/{organization_id}/teams", None, 401),
        line("GET", "(no route)", None, 404),
        line("DELETE", "(no route)", None, 405),
        {**line(None, None, None, 400), "error": "BadHttpMessage"},
    ]
    assert {(r["logger"], r["level"]) for r in records} == {("ogv.api", "INFO")}
    assert all(r["ms"] >= 0 for r in records[:-1])
    log = api.log_path.read_text()
    assert TOKEN not in log
    assert KEY not in log


def line(method: str | None, route: str | None, path: str | None, status: int) -> dict[str, Any]:
    return {"method": method, "route": route, "path": path, "status": status, "error": None}


def test_the_text_format_is_one_line_of_key_values(
    postgres_url: str, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = ValidationClient(redis_url, postgres_url, queue=NAMESPACE)
    with (
        caplog.at_level(logging.INFO, logger="ogv.api"),
        client,
        ApiThread(client, ApiConfig(token=TOKEN, max_wait=0)) as server,
    ):
        call(server.url, "GET", "/healthz", auth=False)
        call(server.url, "GET", f"/v1/teams/{KEY}")

    lines = [
        TextFormatter("%(levelname)s %(name)s %(message)s").format(r)
        for r in caplog.records
        if r.getMessage() == "api.request"
    ]
    assert [line.rsplit(" ms=", 1)[0] for line in lines] == [
        "INFO ogv.api api.request method=GET route=/healthz path=/healthz status=200",
        "INFO ogv.api api.request method=GET route=/v1/teams/{team_id} status=422",
    ]
    assert all(float(line.rsplit(" ms=", 1)[1]) >= 0 for line in lines)
