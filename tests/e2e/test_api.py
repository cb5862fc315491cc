"""The HTTP API end to end: `ogv api` as a real process, a real worker, Redis and PostgreSQL.

Every answer is checked against the OpenAPI document the server publishes
(tests/api_support.py `call`).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from sqlalchemy import func, select

from models import Outcome, Requester, RequestState, ValidationRequest, utcnow
from models.db import session_factory
from models.ids import new_request_id
from tests.support.api import (
    AUTH,
    JSON,
    TOKEN,
    Account,
    ApiProcess,
    ApiThread,
    call,
    free_port,
    install,
    stack_client,
)
from tests.support.services import ARTIFACTS
from tests.support.stacks import Stack, ogv_command
from worker.platforms.sunset import deadline
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.api import ApiConfig

pytestmark = pytest.mark.parametrize("stack", ["redis-postgres"], indirect=True, scope="module")

REQUEST_FIELDS = {
    "hint",
    "id",
    "organization_id",
    "integration_id",
    "team_id",
    "requested_by",
    "state",
    "outcome",
    "message",
    "http_status",
    "error_code",
    "works_on",
    "rate_limit_state",
    "rate_limit_reason",
    "attempts",
    "created_at",
    "finished_at",
    "confirmation",
    "second_check_at",
}


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[ApiProcess]:
    env = dict(stack.env, OGV_API_TOKEN=TOKEN, OGV_API_MAX_WAIT="10")
    log = ARTIFACTS / "logs" / f"api-{uuid.uuid4().hex[:8]}.log"
    server = ApiProcess(env, log).start()
    yield server
    server.stop()
    assert "api.unhandled" not in log.read_text()


def account(stack: Stack, fake: FakeOpsgenie, **cases: KeyScenario) -> Account:
    return install(stack.env["OGV_DATABASE_URL"], stack.env["OGV_ENCRYPTION_KEYS"], fake, cases)


def submit(api: ApiProcess, org: int, integration: int, team: str, query: str = "") -> Any:
    body = {"organization_id": org, "integration_id": integration, "team_id": team}
    return call(api.url, "POST", f"/v1/validations{query}", body=body)


def request_rows(stack: Stack, **where: Any) -> int:
    query = select(func.count()).select_from(ValidationRequest).filter_by(**where)
    with session_factory(stack.env["OGV_DATABASE_URL"])() as session:
        return session.scalar(query) or 0


# -- asking for checks -------------------------------------------------------------------


def test_wait_answers_200_with_each_outcome(
    api: ApiProcess, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, ops=KeyScenario("valid"), old=KeyScenario("invalid_key"))
    jobs = {
        "valid": (acct.org, acct.integration, acct.teams["ops"]),
        "invalid_key": (acct.org, acct.integration, acct.teams["old"]),
        "invalid_team": (acct.org, acct.integration, f"1-nobody-{uuid.uuid4()}"),
        "invalid_integration": (acct.org, acct.integration + 100_000, "1-x"),
    }

    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = dict(
            zip(
                jobs,
                pool.map(lambda job: submit(api, *job, query="?wait=10"), jobs.values()),
                strict=True,
            )
        )

    for outcome, answer in answers.items():
        org, integration, team = jobs[outcome]
        assert answer.status == 200, answer.text
        assert answer.headers["location"] == f"/v1/validations/{answer.body['id']}"
        assert set(answer.body) == REQUEST_FIELDS
        assert {k: answer.body[k] for k in ("organization_id", "integration_id", "team_id")} == {
            "organization_id": org,
            "integration_id": integration,
            "team_id": team,
        }
        assert (answer.body["state"], answer.body["outcome"], answer.body["requested_by"]) == (
            "done",
            outcome,
            "api",
        )
        assert not any(key in answer.text for key in acct.keys.values())
    assert answers["valid"].body["attempts"] == 1
    assert answers["invalid_key"].body["http_status"] == 401


def test_without_wait_202_and_the_location_leads_to_the_outcome(
    api: ApiProcess, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, ops=KeyScenario("valid", latency_ms=300))

    queued = submit(api, acct.org, acct.integration, acct.teams["ops"])

    assert queued.status == 202
    assert (queued.body["state"], queued.body["outcome"]) == ("pending", None)
    deadline = time.monotonic() + 15
    while (seen := call(api.url, "GET", queued.headers["location"])).body["state"] != "done":
        assert time.monotonic() < deadline, seen.body
        time.sleep(0.05)
    assert seen.status == 200
    assert seen.body == {
        **queued.body,
        "state": "done",
        "outcome": "valid",
        "message": seen.body["message"],
        "attempts": 1,
        "http_status": 200,
        "finished_at": seen.body["finished_at"],
    }


def test_a_wait_that_runs_out_answers_202(
    api: ApiProcess, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, slow=KeyScenario("valid", latency_ms=1500))
    started = time.monotonic()

    answer = submit(api, acct.org, acct.integration, acct.teams["slow"], "?wait=0.3")

    assert answer.status == 202
    assert answer.body["state"] in ("pending", "running")
    assert time.monotonic() - started < 1.2


def test_wait_is_capped_by_the_setting(stack: Stack, fake: FakeOpsgenie) -> None:
    acct = account(stack, fake, slow=KeyScenario("valid", latency_ms=2000))
    client = stack_client(stack)
    with client, ApiThread(client, ApiConfig(token=None, max_wait=0.3)) as server:
        started = time.monotonic()
        body = {"organization_id": acct.org, "integration_id": acct.integration}
        answer = call(
            server.url,
            "POST",
            "/v1/validations?wait=60",
            body={**body, "team_id": acct.teams["slow"]},
        )
        elapsed = time.monotonic() - started
    assert answer.status == 202
    assert 0.3 <= elapsed < 1.5


def test_idempotency_key_returns_the_same_request(
    api: ApiProcess, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, ops=KeyScenario("valid"), dev=KeyScenario("valid"))
    key = {"Idempotency-Key": f"form-save-{uuid.uuid4()}"}
    body = {"organization_id": acct.org, "integration_id": acct.integration}

    first = call(
        api.url,
        "POST",
        "/v1/validations?wait=10",
        body={**body, "team_id": acct.teams["ops"]},
        headers=key,
    )
    again = call(
        api.url, "POST", "/v1/validations", body={**body, "team_id": acct.teams["ops"]}, headers=key
    )
    other = call(
        api.url, "POST", "/v1/validations", body={**body, "team_id": acct.teams["dev"]}, headers=key
    )

    assert (first.status, first.body["outcome"]) == (200, "valid")
    assert (again.status, again.body) == (200, first.body)  # final already: 200, not a new check
    assert (other.status, other.body["error"]["code"]) == (409, "idempotency_conflict")
    assert request_rows(stack, team_id=acct.teams["ops"]) == 1
    assert request_rows(stack, team_id=acct.teams["dev"]) == 0


# -- reading -----------------------------------------------------------------------------


def test_get_team_and_unknown_ids(api: ApiProcess, stack: Stack, fake: FakeOpsgenie) -> None:
    acct = account(stack, fake, **{"pay/ments é": KeyScenario("invalid_key")})
    team_id = acct.teams["pay/ments é"]
    assert submit(api, acct.org, acct.integration, team_id, "?wait=10").status == 200

    team = call(api.url, "GET", f"/v1/teams/{quote(team_id, safe='')}")

    assert team.status == 200
    assert team.body == {
        "team_id": team_id,
        "organization_id": acct.org,
        "integration_id": acct.integration,
        "account": f"acct-{acct.org}",
        "platform": "opsgenie",
        "probe": "authenticate",
        "label": "pay/ments é",
        "key_version": 1,
        "status": "invalid_key",
        "status_changed_at": team.body["last_checked_at"],
        "last_checked_at": team.body["last_checked_at"],
        "last_error_code": None,
        "last_http_status": 401,
        "works_on": [],
        "jsm_ops": None,
        "jsm_ops_checked_at": None,
        "deadline": "2027-04-05",
        "days_left": deadline().days_left(),
        "hint": {
            "code": "key_disabled_or_deleted",
            "text": "In Opsgenie (127.0.0.1), open Settings > Integrations, check that the "
            "integration is enabled, and copy its API key again; a deleted integration needs "
            "a new one.",
        },
    }
    assert acct.keys["pay/ments é"] not in team.text
    for path in (
        "/v1/teams/999999-nobody",
        f"/v1/validations/{uuid.uuid4()}",
        "/v1/validations/not-a-uuid",
        "/v1/organizations/987654321987/teams",
    ):
        missing = call(api.url, "GET", path)
        assert (missing.status, missing.body["error"]["code"]) == (404, "not_found"), path


def test_a_pruned_request_answers_410_expired(
    api: ApiProcess, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, ops=KeyScenario("valid"))
    team_id = acct.teams["ops"]
    latest = submit(api, acct.org, acct.integration, team_id, "?wait=10")
    assert latest.status == 200
    # An earlier check of the same team, made and finished 60 days ago.
    made = utcnow() - timedelta(days=60)
    old = new_request_id(int(made.timestamp() * 1000))
    with session_factory(stack.env["OGV_DATABASE_URL"]).begin() as session:
        session.add(
            ValidationRequest(
                id=old,
                organization_id=acct.org,
                integration_id=acct.integration,
                team_id=team_id,
                requested_by=Requester.API,
                state=RequestState.DONE,
                outcome=Outcome.VALID,
                attempts=1,
                created_at=made,
                finished_at=made,
            )
        )
    assert call(api.url, "GET", f"/v1/validations/{old}").status == 200

    pruned = stack.ogv("db", "prune", "--json")

    assert pruned.returncode == 0, pruned.stderr
    assert set(json.loads(pruned.stdout)) == {"requests", "history", "audit"}
    assert json.loads(pruned.stdout)["requests"] >= 1
    gone = call(api.url, "GET", f"/v1/validations/{old}")
    assert (gone.status, gone.body["error"]["code"]) == (410, "expired")
    # The team's latest request stays; an id never made is unknown, not expired.
    assert call(api.url, "GET", f"/v1/validations/{latest.body['id']}").status == 200
    for never in (new_request_id(), uuid.uuid4()):
        missing = call(api.url, "GET", f"/v1/validations/{never}")
        assert (missing.status, missing.body["error"]["code"]) == (404, "not_found")


def test_teams_are_paged_and_filtered_by_status(
    api: ApiProcess, stack: Stack, fake: FakeOpsgenie
) -> None:
    cases = {f"t{i}": KeyScenario("valid" if i % 2 else "invalid_key") for i in range(7)}
    acct = account(stack, fake, **cases)
    for label in ("t0", "t1", "t3"):  # t0 invalid_key, t1 and t3 valid; the rest unknown
        assert submit(api, acct.org, acct.integration, acct.teams[label], "?wait=10").status == 200
    base = f"/v1/organizations/{acct.org}/teams"

    pages, cursor = [], None
    while True:
        page = call(api.url, "GET", f"{base}?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert page.status == 200
        pages.append([t["label"] for t in page.body["teams"]])
        if (cursor := page.body["next_cursor"]) is None:
            break

    assert pages == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]

    def labels(status: str) -> list[str]:
        answer = call(api.url, "GET", f"{base}?status={status}")
        return [t["label"] for t in answer.body["teams"]]

    assert labels("valid") == ["t1", "t3"]
    assert labels("invalid_key") == ["t0"]
    assert labels("unknown") == ["t2", "t4", "t5", "t6"]
    assert labels("rejected") == []


# -- authentication ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer \u00e9t\u00e9"},
    ],
)
def test_a_missing_or_wrong_token_is_401(api: ApiProcess, headers: dict[str, str]) -> None:
    for method, path, body in [
        ("GET", f"/v1/validations/{uuid.uuid4()}", None),
        ("GET", "/v1/teams/1-x", None),
        ("GET", "/v1/organizations/1/teams", None),
        ("GET", "/v1/guard", None),
        ("GET", "/v1/changes/held", None),
        ("POST", "/v1/validations", {"organization_id": 1, "integration_id": 1, "team_id": "x"}),
        ("POST", "/v1/organizations/1/integrations", {"account": "acme"}),
        ("PUT", "/v1/teams/1-x/key", {"integration_key": "k"}),
        ("DELETE", "/v1/teams/1-x", None),
    ]:
        raw = None if body is None else json.dumps(body).encode()
        answer = call(api.url, method, path, raw=raw, headers={**JSON, **headers}, auth=False)
        assert (answer.status, answer.body["error"]["code"]) == (401, "unauthorized")
        assert answer.headers["www-authenticate"].startswith("Bearer")


def test_health_and_the_document_need_no_token(api: ApiProcess) -> None:
    health = call(api.url, "GET", "/healthz", auth=False)
    doc = call(api.url, "GET", "/v1/openapi.json", auth=False)

    assert (health.status, health.body) == (
        200,
        {"status": "ok", "checks": {"database": "ok", "broker": "ok"}},
    )
    assert doc.status == 200
    assert doc.body["openapi"] == "3.1.0"
    assert set(doc.body["paths"]) == {
        "/v1/validations",
        "/v1/validations/{request_id}",
        "/v1/teams/{team_id}",
        "/v1/teams/{team_id}/key",
        "/v1/organizations/{organization_id}/teams",
        "/v1/organizations/{organization_id}/migration",
        "/v1/organizations/{organization_id}/integrations",
        "/v1/organizations/{organization_id}/integrations/{integration_id}",
        "/v1/organizations/{organization_id}/integrations/{integration_id}/teams",
        "/v1/guard",
        "/v1/changes/held",
        "/v1/audit",
        "/v1/openapi.json",
        "/healthz",
    }


def run_ogv_api(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ogv_command(), "api", "--port", str(free_port()), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_server_refuses_to_start_without_a_token(stack: Stack) -> None:
    env = {k: v for k, v in stack.env.items() if k != "OGV_API_TOKEN"}

    without = run_ogv_api(env)
    public = run_ogv_api(env, "--insecure-local", "--host", "0.0.0.0")

    assert without.returncode == 1
    assert "OGV_API_TOKEN is not set" in without.stderr
    assert public.returncode == 1
    assert "--insecure-local only binds to" in public.stderr


def test_insecure_local_serves_without_a_token(stack: Stack, tmp_path: Path) -> None:
    env = {k: v for k, v in stack.env.items() if k != "OGV_API_TOKEN"}
    server = ApiProcess(env, tmp_path / "api.log", "--insecure-local").start()
    try:
        answer = call(server.url, "GET", f"/v1/validations/{uuid.uuid4()}", auth=False)
    finally:
        server.stop()
    assert (answer.status, answer.body["error"]["code"]) == (404, "not_found")


# -- refused input -----------------------------------------------------------------------

VALID = b'{"organization_id": 1, "integration_id": 1, "team_id": "1-x"}'
ERRORS: list[tuple[str, str, bytes | None, dict[str, str], int, str]] = [
    ("POST", "/v1/validations", b"{not json", JSON, 400, "malformed_json"),
    ("POST", "/v1/validations", b"\xff\xfe\x00", JSON, 400, "malformed_json"),
    ("POST", "/v1/validations", b"[" * 5000, JSON, 400, "malformed_json"),
    ("POST", "/v1/validations", b"[]", JSON, 422, "invalid_request"),
    ("POST", "/v1/validations", b'{"organization_id": 1}', JSON, 422, "invalid_request"),
    (
        "POST",
        "/v1/validations",
        b'{"organization_id": "1", "integration_id": 1, "team_id": "1-x"}',
        JSON,
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/validations",
        b'{"organization_id": true, "integration_id": 1, "team_id": "1-x"}',
        JSON,
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/validations",
        b'{"organization_id": 1, "integration_id": 1, "team_id": "1-a\\u0000b"}',
        JSON,
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/validations",
        b'{"organization_id": 7.0, "integration_id": 1, "team_id": "1-x"}',
        JSON,
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/validations",
        b'{"organization_id": 1, "integration_id": 1, "team_id": "1- x"}',
        JSON,
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/v1/validations",
        b'{"organization_id": 1, "integration_id": 1, "team_id": "1-x", "key": "k"}',
        JSON,
        422,
        "invalid_request",
    ),
    ("POST", "/v1/validations?wait=soon", VALID, JSON, 422, "invalid_request"),
    ("POST", "/v1/validations?wait=-1", VALID, JSON, 422, "invalid_request"),
    ("POST", "/v1/validations?wait=nan", VALID, JSON, 422, "invalid_request"),
    ("POST", "/v1/validations?wiat=1", VALID, JSON, 422, "invalid_request"),
    (
        "POST",
        "/v1/validations",
        VALID,
        {**JSON, "Idempotency-Key": "x" * 201},
        422,
        "invalid_request",
    ),
    ("POST", "/v1/validations", b"x" * 20_000, JSON, 413, "too_large"),
    ("POST", "/v1/validations", VALID, {}, 415, "unsupported_media_type"),
    (
        "POST",
        "/v1/validations",
        VALID,
        {"Content-Type": "text/plain"},
        415,
        "unsupported_media_type",
    ),
    ("GET", "/v1/organizations/abc/teams", None, {}, 422, "invalid_request"),
    ("GET", "/v1/organizations/1/teams?limit=0", None, {}, 422, "invalid_request"),
    ("GET", "/v1/organizations/1/teams?limit=101", None, {}, 422, "invalid_request"),
    ("GET", "/v1/organizations/1/teams?status=great", None, {}, 422, "invalid_request"),
    ("GET", "/v1/organizations/1/teams?cursor=A", None, {}, 422, "invalid_request"),
    ("GET", "/v1/organizations/1/teams?cursor=AA%3D%3D", None, {}, 422, "invalid_request"),
    ("GET", "/v1/organizations/1/teams?limit=7.0", None, {}, 422, "invalid_request"),
    ("GET", "/v1/organizations/7.0/teams", None, {}, 422, "invalid_request"),
    ("GET", "/v1/teams/x", None, {}, 422, "invalid_request"),
    ("GET", f"/v1/teams/1-{'x' * 299}", None, {}, 422, "invalid_request"),
    ("POST", "/v1/validations?wait=%201", VALID, JSON, 422, "invalid_request"),
    ("POST", "/v1/validations?wait=inf", VALID, JSON, 422, "invalid_request"),
    ("GET", "/v1/nothing-here", None, {}, 404, "not_found"),
    ("DELETE", "/v1/validations", None, {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "raw", "headers", "status", "code"), ERRORS)
def test_refused_input_gets_its_stable_code(
    api: ApiProcess,
    stack: Stack,
    method: str,
    path: str,
    raw: bytes | None,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    before = request_rows(stack)

    answer = call(api.url, method, path, raw=raw, headers=headers)

    assert (answer.status, answer.body["error"]["code"]) == (status, code)
    assert set(answer.body["error"]) == {"code", "message"}
    assert request_rows(stack) == before


def test_unreachable_services_are_503_and_the_request_is_kept(
    stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, ops=KeyScenario("valid"))
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"
    client = stack_client(stack, broker_url=dead_broker)
    body = {
        "organization_id": acct.org,
        "integration_id": acct.integration,
        "team_id": acct.teams["ops"],
    }
    with client, ApiThread(client, ApiConfig(token=None, max_wait=1)) as server:
        health = call(server.url, "GET", "/healthz")
        refused = call(server.url, "POST", "/v1/validations", body=body)
        retried = call(server.url, "POST", "/v1/validations", body=body)

    assert (health.status, health.body["checks"]) == (
        503,
        {"database": "ok", "broker": "unavailable"},
    )
    assert (refused.status, refused.body["error"]["code"]) == (503, "broker_unavailable")
    assert refused.headers["retry-after"] == "1"
    # The outbox kept the request: asking again returns it (the sweeper publishes it).
    assert (retried.status, retried.body["state"]) == (202, "pending")
    assert request_rows(stack, team_id=acct.teams["ops"]) == 1


# -- coalescing under load ----------------------------------------------------------------


async def _burst(url: str, body: dict[str, Any], count: int) -> list[tuple[int, str]]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:

        async def one() -> tuple[int, str]:
            async with session.post(f"{url}/v1/validations", json=body) as response:
                return response.status, (await response.json())["id"]

        return await asyncio.gather(*(one() for _ in range(count)))


def test_1000_concurrent_posts_for_one_team_make_one_request(
    api: ApiProcess, stack: Stack, fake: FakeOpsgenie
) -> None:
    acct = account(stack, fake, ops=KeyScenario("valid"))
    body = {
        "organization_id": acct.org,
        "integration_id": acct.integration,
        "team_id": acct.teams["ops"],
    }
    worker = stack.workers[0]
    worker.stop()  # nothing consumes: the check stays pending through the whole burst
    try:
        answers = asyncio.run(_burst(api.url, body, 1000))
    finally:
        worker.start()

    assert {status for status, _ in answers} == {202}
    assert len({request_id for _, request_id in answers}) == 1
    assert request_rows(stack, team_id=acct.teams["ops"]) == 1
    done = call(api.url, "GET", f"/v1/validations/{answers[0][1]}")
    deadline = time.monotonic() + 20
    while done.body["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.1)
        done = call(api.url, "GET", f"/v1/validations/{answers[0][1]}")
    assert (done.body["state"], done.body["outcome"]) == ("done", "valid")
    assert fake.calls(acct.keys["ops"]) == 1


def test_concurrent_posts_for_many_teams_each_get_their_outcome(
    api: ApiProcess, stack: Stack, fake: FakeOpsgenie
) -> None:
    # Concurrent POSTs are recorded in groups and checked as batches: each still
    # gets its own request and outcome, and each key is called once.
    cases = {f"team{i}": KeyScenario("valid" if i % 3 else "invalid_key") for i in range(30)}
    acct = account(stack, fake, **cases)

    async def burst() -> list[tuple[str, Any]]:
        connector = aiohttp.TCPConnector(limit=100)
        async with aiohttp.ClientSession(connector=connector, headers=AUTH) as session:

            async def one(label: str) -> tuple[str, Any]:
                body = {
                    "organization_id": acct.org,
                    "integration_id": acct.integration,
                    "team_id": acct.teams[label],
                }
                async with session.post(f"{api.url}/v1/validations?wait=10", json=body) as answer:
                    return label, (answer.status, await answer.json())

            return await asyncio.gather(*(one(label) for label in cases))

    answers = dict(asyncio.run(burst()))

    for label, (status, body) in answers.items():
        assert (status, body["team_id"], body["outcome"]) == (
            200,
            acct.teams[label],
            cases[label].behaviour,
        )
        assert fake.calls(acct.keys[label]) == 1
        assert request_rows(stack, team_id=acct.teams[label]) == 1
    assert len({body["id"] for _, body in answers.values()}) == len(cases)
    # 30 POSTs at once cannot each find the API idle: some were recorded together.
    with session_factory(stack.env["OGV_DATABASE_URL"])() as session:
        messages = session.scalar(
            select(
                func.count(
                    func.distinct(func.coalesce(ValidationRequest.batch_id, ValidationRequest.id))
                )
            ).where(ValidationRequest.team_id.in_(list(acct.teams.values())))
        )
    assert messages is not None and messages < len(cases)
