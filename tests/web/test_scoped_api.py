"""Scoped tokens on the HTTP API: each route's scope, a token's organizations, the
bootstrap tokens, revocation, and the audit route; every answer checked against the
OpenAPI document (tests/api_support.py `call`)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from models import HeldChange, TeamStatus
from models.db import session_factory
from tests.support.api import TOKEN, Account, Answer, ApiThread, call, install
from worker import access, audit
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.api import build_app
from worker.web.client import ValidationClient
from worker.web.config import ApiConfig
from worker.web.console.routes import is_console_path
from worker.web.openapi import document
from worker.web.scopes import ROUTE_SCOPES

SECOND_BOOTSTRAP = secrets.token_urlsafe(32)


@pytest.fixture(scope="module")
def client(postgres_url: str, redis_url: str) -> Iterator[ValidationClient]:
    with ValidationClient(redis_url, postgres_url, queue=f"scopes-{uuid.uuid4().hex}") as made:
        yield made


@pytest.fixture(scope="module")
def server(client: ValidationClient) -> Iterator[ApiThread]:
    # No cache: a revocation is seen by the next request (the cache is tested in test_access).
    config = ApiConfig(token=f"{TOKEN} {SECOND_BOOTSTRAP}", max_wait=0.02, token_cache_seconds=0)
    with ApiThread(client, config) as running:
        yield running


@pytest.fixture(scope="module")
def orgs(postgres_url: str, fernet_key: str, fake: FakeOpsgenie) -> tuple[Account, Account]:
    def one() -> Account:
        return install(postgres_url, fernet_key, fake, {"ops": KeyScenario("valid")})

    return one(), one()


def token(postgres_url: str, *scopes: str, orgs: tuple[int, ...] = ()) -> str:
    with session_factory(postgres_url).begin() as session:
        issued = access.create_token(
            session,
            f"t-{uuid.uuid4().hex[:10]}",
            list(scopes),
            organizations=orgs,
            actor="cli:test",
        )
    return issued.token


def as_(server: ApiThread, bearer: str, method: str, path: str, body: Any = None) -> Answer:
    return call(
        server.url,
        method,
        path,
        body=body,
        auth=False,
        headers={"Authorization": f"Bearer {bearer}"},
    )


def ask(account: Account) -> dict[str, Any]:
    return {
        "organization_id": account.org,
        "integration_id": account.integration,
        "team_id": account.teams["ops"],
    }


def test_each_route_needs_its_scope(server: ApiThread, postgres_url: str, orgs: Any) -> None:
    mine, _ = orgs
    reader, validator, operator = (token(postgres_url, s) for s in ("read", "validate", "operate"))
    team = f"/v1/teams/{mine.teams['ops']}"

    assert as_(server, reader, "GET", team).status == 200
    assert as_(server, reader, "GET", f"/v1/organizations/{mine.org}/teams").status == 200
    refused = as_(server, reader, "POST", "/v1/validations", ask(mine))
    assert (refused.status, refused.body["error"]["code"]) == (403, "forbidden")
    assert "validate scope" in refused.body["error"]["message"]
    assert as_(server, reader, "GET", "/v1/guard").status == 403
    assert as_(server, reader, "GET", "/v1/audit").status == 403
    assert as_(server, validator, "POST", "/v1/validations", ask(mine)).status in (200, 202)
    assert as_(server, validator, "GET", team).status == 200  # validate includes read
    assert as_(server, validator, "GET", "/v1/changes/held").status == 403
    for path in ("/v1/guard", "/v1/changes/held", "/v1/audit", team):
        assert as_(server, operator, "GET", path).status == 200


def test_every_bootstrap_token_may_do_everything(server: ApiThread, orgs: Any) -> None:
    mine, theirs = orgs
    for bearer in (TOKEN, SECOND_BOOTSTRAP):
        assert as_(server, bearer, "POST", "/v1/validations", ask(theirs)).status in (200, 202)
        assert as_(server, bearer, "GET", "/v1/audit").status == 200
        assert as_(server, bearer, "GET", f"/v1/organizations/{mine.org}/migration").status == 200
    unknown = as_(server, "ogv_" + secrets.token_urlsafe(32), "GET", "/v1/guard")
    assert (unknown.status, unknown.body["error"]["code"]) == (401, "unauthorized")


def test_a_token_of_one_organization_sees_and_asks_only_for_it(
    server: ApiThread, postgres_url: str, orgs: Any
) -> None:
    mine, theirs = orgs
    limited = token(postgres_url, "validate", orgs=(mine.org,))
    theirs_asked = call(server.url, "POST", "/v1/validations", body=ask(theirs))  # bootstrap

    assert as_(server, limited, "POST", "/v1/validations", ask(mine)).status in (200, 202)
    refused = as_(server, limited, "POST", "/v1/validations", ask(theirs))
    assert (refused.status, refused.body["error"]["code"]) == (403, "forbidden")
    assert as_(server, limited, "GET", f"/v1/teams/{mine.teams['ops']}").status == 200
    for path in (
        f"/v1/teams/{theirs.teams['ops']}",
        f"/v1/organizations/{theirs.org}/teams",
        f"/v1/organizations/{theirs.org}/migration",
        f"/v1/validations/{theirs_asked.body['id']}",
    ):
        hidden = as_(server, limited, "GET", path)
        assert (hidden.status, hidden.body["error"]["code"]) == (404, "not_found"), path


def test_an_operator_of_one_organization_reads_only_its_held_changes_and_audit(
    server: ApiThread, postgres_url: str, orgs: Any
) -> None:
    mine, theirs = orgs
    sessions = session_factory(postgres_url)
    with sessions.begin() as session:
        for account in orgs:
            session.add(
                HeldChange(
                    team_id=account.teams["ops"], request_id=uuid.uuid4(),
                    base_url="https://held.example/", account=f"acct-{account.org}",
                    key_version=1, old_status=TeamStatus.VALID,
                    new_status=TeamStatus.INVALID_KEY, http_status=401,
                )
            )  # fmt: skip
            audit.record(session, "cli:ops", "team.add", organization_id=account.org)
    limited = token(postgres_url, "operate", orgs=(mine.org,))

    held = as_(server, limited, "GET", "/v1/changes/held?base_url=https://held.example/")
    everything = call(server.url, "GET", "/v1/changes/held?base_url=https://held.example/")
    events = as_(server, limited, "GET", "/v1/audit?limit=500").body["events"]
    theirs_only = as_(server, limited, "GET", f"/v1/audit?organization_id={theirs.org}")

    guard = as_(server, limited, "GET", "/v1/guard")  # every organization's counts

    assert [row["team_id"] for row in held.body["held"]] == [mine.teams["ops"]]
    assert len(everything.body["held"]) == 2
    assert (guard.status, guard.body["error"]["code"]) == (403, "forbidden")
    assert "/v1/changes/held" in guard.body["error"]["message"]
    assert {e["organization_id"] for e in events} == {mine.org}
    assert theirs_only.body == {"events": [], "next_cursor": None}
    with sessions.begin() as session:
        session.query(HeldChange).filter(HeldChange.base_url == "https://held.example/").delete()


def test_the_audit_route_pages_newest_first_and_filters(
    server: ApiThread, postgres_url: str
) -> None:
    org = uuid.uuid4().int % 10**9 + 1
    with session_factory(postgres_url).begin() as session:
        for n in range(3):
            audit.record(session, "token:app", "keys.rotate", organization_id=org, target=str(n))
    base = f"/v1/audit?organization_id={org}&action=keys.rotate&since=2020-01-01"

    first = call(server.url, "GET", f"{base}&limit=2")
    rest = call(server.url, "GET", f"{base}&limit=2&cursor={first.body['next_cursor']}")

    assert [e["target"] for e in first.body["events"] + rest.body["events"]] == ["2", "1", "0"]
    assert rest.body["next_cursor"] is None
    assert first.body["events"][0]["actor"] == "token:app"
    for bad in ("action=team.dance", "since=yesterday", "cursor=abc", "limit=0", "other=1"):
        refused = call(server.url, "GET", f"/v1/audit?{bad}")
        assert (refused.status, refused.body["error"]["code"]) == (422, "invalid_request")


def test_a_revoked_token_is_refused_and_use_is_recorded(
    server: ApiThread, postgres_url: str
) -> None:
    name = f"t-{uuid.uuid4().hex[:10]}"
    sessions = session_factory(postgres_url)
    with sessions.begin() as session:
        issued = access.create_token(session, name, ["operate"], actor="cli:test")

    assert as_(server, issued.token, "GET", "/v1/guard").status == 200
    with sessions.begin() as session:
        access.revoke_token(session, name, actor="cli:test")
    assert as_(server, issued.token, "GET", "/v1/guard").status == 401
    with sessions() as session:
        [view] = [v for v in access.list_tokens(session) if v.name == name]
    assert view.last_used_at is not None and view.revoked_at is not None


def test_the_document_states_each_routes_scope_and_every_route_has_one(
    client: ValidationClient,
) -> None:
    doc = document()
    app = build_app(client, ApiConfig(token=TOKEN, max_wait=1))
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        # The console signs in with its cookie and the operate scope (tests/web/test_console.py).
        and not is_console_path(route.resource.canonical)
    }
    public = {("GET", "/healthz"), ("GET", "/v1/openapi.json")}

    assert routes - public == set(ROUTE_SCOPES)
    for (method, path), scope in ROUTE_SCOPES.items():
        operation = doc["paths"][path][method.lower()]
        assert operation["x-scopes"] == [scope.value]
        assert operation["security"] == [{"bearerAuth": [scope.value]}]
        assert "403" in operation["responses"]
    for method, path in public:
        assert doc["paths"][path][method.lower()]["security"] == []
