"""The OpenAPI document against the implementation: requests generated from the document.

Every parameter and body is drawn from the document's own schemas (hypothesis-
jsonschema), or from near misses and arbitrary text. Whether a request is valid is
decided from the document alone (`Contract`, and how it says values are written),
never from worker/web/api.py. Then:

- a request the document calls valid is never refused as invalid (no 400 or 422);
- one it calls invalid is refused with the JSON error (400 or 422, or 404 where the
  path cannot reach the route at all);
- nothing is ever a 5xx, and every answer matches the document (`call`).

JSON Schema leaves two things to prose, which `Contract` reads as the document says
them: an integer is an integer literal (7, not 7.0), and a pattern is ECMA-262's,
whose `$` ends the string (Python's `re.search` also lets it precede a last "\\n").

The server runs in-process on PostgreSQL and Redis, with one installed account so
that pages and teams are found too; nothing consumes what it publishes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator, ValidationError, validators

from tests.support.api import JSON, TOKEN, Account, Answer, ApiThread, call, install
from tests.support.services import NAMESPACE
from worker.cursors import encode_cursor
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient
from worker.web.inputs import DECIMAL_PATTERN, DIGITS_PATTERN
from worker.web.openapi import document

DOC = document()
SCHEMA = settings(
    max_examples=100,
    derandomize=True,  # the same examples on every run: CI fails only on a real change
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
REFUSED_AS_INVALID = {400, 422}


# -- what the document says --------------------------------------------------------------


def _ecma_pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    # Every pattern in the document is anchored (^...$, checked below), so fullmatch
    # is ECMA-262's meaning of it.
    if validator.is_type(instance, "string") and re.fullmatch(pattern, instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


Contract = validators.extend(
    Draft202012Validator,
    validators={"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: type(value) is int
    ),
)
WRITTEN_WRONG = object()


def conforms(schema: Mapping[str, Any], value: object) -> bool:
    return value is not WRITTEN_WRONG and Contract(schema).is_valid(value)


def as_written(schema: Mapping[str, Any], raw: str) -> object:
    """The value a path segment or query string stands for, as the document says
    integers (digits) and numbers (decimals) are written; WRITTEN_WRONG if not."""
    if schema["type"] == "integer":
        return int(raw) if re.fullmatch(DIGITS_PATTERN, raw) else WRITTEN_WRONG
    if schema["type"] == "number":
        return float(raw) if re.fullmatch(DECIMAL_PATTERN, raw) else WRITTEN_WRONG
    return raw


def parameter(path: str, method: str, name: str) -> dict[str, Any]:
    """The schema of an operation's parameter."""
    found = [p for p in DOC["paths"][path][method]["parameters"] if p["name"] == name]
    assert len(found) == 1, (path, method, name)
    schema: dict[str, Any] = found[0]["schema"]
    return schema


def test_every_pattern_is_anchored() -> None:
    def patterns(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                yield node["pattern"]
            for value in node.values():
                yield from patterns(value)
        elif isinstance(node, list):
            for value in node:
                yield from patterns(value)

    found = list(patterns(DOC))
    assert len(found) >= 3
    assert all(p.startswith("^") and p.endswith("$") for p in found), found


# -- values: from the document, near misses, anything ------------------------------------


def written(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    """Values of `schema` as a client writes them in a path or a query string."""
    return from_schema(dict(schema)).map(lambda value: str(value))


NEAR_MISS_TEXT = [
    "",
    " ",
    "0",
    "-1",
    "+1",
    " 1",
    "1 ",
    "7.0",
    "1.",
    ".5",
    "1e",
    "1_0",
    "\u0663",
    "\u00b9",
    "inf",
    "nan",
    "true",
    "0x1",
    "9" * 20,
    "0" * 30 + "1",
    "1-",
    "x",
    "1- x",
    "1-x ",
    "01-x",
    "0-x",
    "12345678901-x",
    "1-a\n",
    "1-a\x00b",
    "1-a\x85",
    "1-" + "x" * 299,
    "A",
    "AA==",
    "+/",
    "A" * 1601,
    "valid ",
]
# Text a path or query can carry: anything but surrogates (not UTF-8).
any_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


def path_or_query(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    return written(schema) | st.sampled_from(NEAR_MISS_TEXT) | any_text


def optional(values: st.SearchStrategy[str]) -> st.SearchStrategy[str | None]:
    return st.none() | values


def routable(segment: str) -> bool:
    # "" and dot segments change the path itself, so no route of it is reached.
    return segment not in ("", ".", "..")


TEAM_ID = parameter("/v1/teams/{team_id}", "get", "team_id")
# A valid id spoiled by a character the pattern refuses, at either end or inside.
spoiled_team_ids = st.builds(
    lambda team_id, bad, at: team_id[:at] + bad + team_id[at:],
    from_schema(TEAM_ID),
    st.sampled_from(["\x00", "\n", "\x1f", "\x7f", "\x85", "\u2028", " ", "-", "x" * 300]),
    st.sampled_from([0, 2, 3, -1]),
)


# -- the server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(postgres_url: str, redis_url: str) -> Iterator[ApiThread]:
    client = ValidationClient(
        redis_url, postgres_url, queue=f"{NAMESPACE}-schema-{uuid.uuid4().hex[:8]}"
    )
    with client, ApiThread(client, ApiConfig(token=TOKEN, max_wait=0.02)) as running:
        yield running


@pytest.fixture(scope="module")
def account(postgres_url: str, fernet_key: str, fake: FakeOpsgenie) -> Account:
    labels = ["ops", "pay/ments \u00e9", "a b", "\u2603 %2F ? #"]
    return install(
        postgres_url, fernet_key, fake, {label: KeyScenario("valid") for label in labels}
    )


def accepted(answer: Answer) -> None:
    assert answer.status < 500, answer.text
    assert answer.status not in REFUSED_AS_INVALID, answer.text


def refused(answer: Answer, *statuses: int) -> None:
    assert answer.status in statuses, answer.text
    assert set(answer.body["error"]) == {"code", "message"}


# -- POST /v1/validations ----------------------------------------------------------------

WAIT = parameter("/v1/validations", "post", "wait")
IDEMPOTENCY_KEY = parameter("/v1/validations", "post", "Idempotency-Key")
SUBMISSION = DOC["components"]["schemas"]["ValidationInput"]
# What http.client can put in a header: Latin-1 without controls.
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=210,
)


def submissions() -> st.SearchStrategy[dict[str, Any]]:
    # hypothesis-jsonschema 0.23.1's object strategy fails on hypothesis 6.170 ('many'
    # object has no attribute 'more'); each property is still drawn from the document,
    # and all three are required, no other allowed.
    properties = SUBMISSION["properties"]
    assert set(SUBMISSION["required"]) == set(properties)
    return st.fixed_dictionaries({name: from_schema(s) for name, s in properties.items()})


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, 2**31, 2**63, 1.0, 7.0, True, "7"])
    | any_text
    | st.sampled_from(NEAR_MISS_TEXT)
)


@st.composite
def near_miss_submissions(draw: st.DrawFn) -> Any:
    """A submission with one field changed, dropped or added, or any JSON at all."""
    body = dict(draw(submissions()))
    change = draw(st.sampled_from(["replace", "drop", "add", "other"]))
    if change == "replace":
        name = draw(st.sampled_from(sorted(body)))
        spoiled = spoiled_team_ids if name == "team_id" else st.nothing()
        body[name] = draw(spoiled | json_scalars)
    elif change == "drop":
        del body[draw(st.sampled_from(sorted(body)))]
    elif change == "add":
        body[draw(st.sampled_from(["key", "integration_key", "", "Team_id"]))] = draw(json_scalars)
    else:
        return draw(json_scalars | st.lists(json_scalars, max_size=3))
    return body


def post(server: ApiThread, wait: str | None, key: str | None, body: Any) -> tuple[Answer, bool]:
    """POST a submission; with whether the document calls the request valid."""
    query = f"?{urlencode({'wait': wait})}" if wait is not None else ""
    headers = {**JSON, **({"Idempotency-Key": key} if key is not None else {})}
    answer = call(
        server.url,
        "POST",
        f"/v1/validations{query}",
        raw=json.dumps(body).encode(),
        headers=headers,
    )
    valid = (
        (wait is None or conforms(WAIT, as_written(WAIT, wait)))
        # HTTP drops the spaces around a header value: the server never sees them.
        and (key is None or conforms(IDEMPOTENCY_KEY, key.strip(" ")))
        and conforms(SUBMISSION, body)
    )
    return answer, valid


@SCHEMA
@given(
    wait=optional(written(WAIT)),
    key=optional(from_schema(IDEMPOTENCY_KEY)),
    body=submissions(),
    real=st.booleans(),
)
def test_a_valid_post_is_never_refused(
    server: ApiThread,
    account: Account,
    wait: str | None,
    key: str | None,
    body: dict[str, Any],
    real: bool,
) -> None:
    if real:  # a team that exists, so that checks are recorded for real teams too
        body = {
            "organization_id": account.org,
            "integration_id": account.integration,
            "team_id": sorted(account.teams.values())[body["integration_id"] % len(account.teams)],
        }

    answer, valid = post(server, wait, key, body)

    assume(valid)
    accepted(answer)
    assert answer.status in (200, 202, 409), answer.text  # 409: a key used for another team


@settings(SCHEMA, max_examples=200)
@given(
    wait=optional(path_or_query(WAIT)),
    key=optional(from_schema(IDEMPOTENCY_KEY) | header_text),
    body=near_miss_submissions() | submissions(),
)
def test_an_invalid_post_is_refused(
    server: ApiThread, wait: str | None, key: str | None, body: Any
) -> None:
    answer, valid = post(server, wait, key, body)

    assume(not valid)
    refused(answer, *REFUSED_AS_INVALID)


# -- GET /v1/teams/{team_id} -------------------------------------------------------------


def get_team(server: ApiThread, team_id: str) -> Answer:
    return call(server.url, "GET", f"/v1/teams/{quote(team_id, safe='')}")


@SCHEMA
@given(team_id=from_schema(TEAM_ID), real=st.integers(min_value=0, max_value=4))
def test_a_valid_team_id_is_looked_up(
    server: ApiThread, account: Account, team_id: str, real: int
) -> None:
    teams = sorted(account.teams.values())
    if real < len(teams):
        team_id = teams[real]
    assume(conforms(TEAM_ID, team_id))

    answer = get_team(server, team_id)

    accepted(answer)
    assert answer.status == (200 if team_id in teams else 404), answer.text
    if answer.status == 200:
        assert answer.body["team_id"] == team_id


@SCHEMA
@given(team_id=spoiled_team_ids | st.sampled_from(NEAR_MISS_TEXT) | any_text)
def test_an_invalid_team_id_is_refused_without_being_repeated(
    server: ApiThread, team_id: str
) -> None:
    assume(not conforms(TEAM_ID, team_id))

    answer = get_team(server, team_id)

    refused(answer, 422 if routable(team_id) else 404)
    if len(team_id) >= 8:  # short ones can be in any message by chance
        assert team_id not in answer.text


# -- GET /v1/organizations/{organization_id}/teams and .../migration ----------------------

TEAMS = "/v1/organizations/{organization_id}/teams"
ORGANIZATION_ID = parameter(TEAMS, "get", "organization_id")
PAGE = {name: parameter(TEAMS, "get", name) for name in ("status", "limit", "cursor")}


def list_teams(server: ApiThread, org: str, query: Mapping[str, str | None]) -> tuple[Answer, bool]:
    """GET a page; with whether the document calls the request valid."""
    given = {name: value for name, value in query.items() if value is not None}
    path = f"/v1/organizations/{quote(org, safe='')}/teams"
    answer = call(server.url, "GET", f"{path}?{urlencode(given)}" if given else path)
    valid = conforms(ORGANIZATION_ID, as_written(ORGANIZATION_ID, org)) and all(
        conforms(PAGE[name], as_written(PAGE[name], value)) for name, value in given.items()
    )
    return answer, valid


def organizations(account_org: int) -> st.SearchStrategy[str]:
    return st.just(str(account_org)) | written(ORGANIZATION_ID)


@SCHEMA
@given(
    data=st.data(),
    status=optional(written(PAGE["status"])),
    limit=optional(written(PAGE["limit"])),
    cursor=optional(from_schema(PAGE["cursor"])),
    real_cursor=st.booleans(),
)
def test_a_valid_page_query_is_answered(
    server: ApiThread,
    account: Account,
    data: st.DataObject,
    status: str | None,
    limit: str | None,
    cursor: str | None,
    real_cursor: bool,
) -> None:
    org = data.draw(organizations(account.org))
    if cursor is not None and real_cursor:  # a next_cursor this API could have given out
        cursor = encode_cursor(data.draw(st.sampled_from(sorted(account.teams.values()))))

    answer, valid = list_teams(server, org, {"status": status, "limit": limit, "cursor": cursor})

    assume(valid)
    accepted(answer)
    assert answer.status == (200 if org == str(account.org) else 404), answer.text


@SCHEMA
@given(
    data=st.data(),
    org=optional(path_or_query(ORGANIZATION_ID)),
    status=optional(path_or_query(PAGE["status"])),
    limit=optional(path_or_query(PAGE["limit"])),
    cursor=optional(from_schema(PAGE["cursor"]) | st.sampled_from(NEAR_MISS_TEXT) | any_text),
)
def test_an_invalid_page_query_is_refused(
    server: ApiThread,
    account: Account,
    data: st.DataObject,
    org: str | None,
    status: str | None,
    limit: str | None,
    cursor: str | None,
) -> None:
    org = org if org is not None else data.draw(organizations(account.org))
    answer, valid = list_teams(server, org, {"status": status, "limit": limit, "cursor": cursor})

    assume(not valid)
    refused(answer, 422 if routable(org) else 404)


MIGRATION = "/v1/organizations/{organization_id}/migration"


@SCHEMA
@given(data=st.data(), org=optional(path_or_query(ORGANIZATION_ID)))
def test_the_migration_report_takes_the_documented_ids(
    server: ApiThread, account: Account, data: st.DataObject, org: str | None
) -> None:
    org = org if org is not None else data.draw(organizations(account.org))
    schema = parameter(MIGRATION, "get", "organization_id")

    answer = call(server.url, "GET", f"/v1/organizations/{quote(org, safe='')}/migration")

    if conforms(schema, as_written(schema, org)):
        accepted(answer)
        assert answer.status == (200 if org == str(account.org) else 404), answer.text
    else:
        refused(answer, 422 if routable(org) else 404)


# -- GET /v1/guard and /v1/changes/held ---------------------------------------------------

HELD = "/v1/changes/held"
HELD_QUERY = {name: parameter(HELD, "get", name) for name in ("base_url", "limit", "cursor")}
NEAR_MISS_URLS = ["http://", "https://", "https://a b", "ftp://x.test/", "http://x.test/\u00e9"]


def list_held(server: ApiThread, query: Mapping[str, str | None]) -> tuple[Answer, bool]:
    """GET a page of held changes; with whether the document calls the request valid."""
    given = {name: value for name, value in query.items() if value is not None}
    answer = call(server.url, "GET", f"{HELD}?{urlencode(given)}" if given else HELD)
    valid = all(
        conforms(HELD_QUERY[name], as_written(HELD_QUERY[name], value))
        for name, value in given.items()
    )
    return answer, valid


@settings(SCHEMA, max_examples=40)
@given(
    base_url=optional(written(HELD_QUERY["base_url"])),
    limit=optional(written(HELD_QUERY["limit"])),
    cursor=optional(from_schema(HELD_QUERY["cursor"])),
)
def test_a_valid_held_query_is_answered(
    server: ApiThread, base_url: str | None, limit: str | None, cursor: str | None
) -> None:
    answer, valid = list_held(server, {"base_url": base_url, "limit": limit, "cursor": cursor})

    assume(valid)
    accepted(answer)
    assert answer.status == 200, answer.text


@settings(SCHEMA, max_examples=60)
@given(
    base_url=optional(path_or_query(HELD_QUERY["base_url"]) | st.sampled_from(NEAR_MISS_URLS)),
    limit=optional(path_or_query(HELD_QUERY["limit"])),
    cursor=optional(st.sampled_from(NEAR_MISS_TEXT) | any_text),
)
def test_an_invalid_held_query_is_refused(
    server: ApiThread, base_url: str | None, limit: str | None, cursor: str | None
) -> None:
    answer, valid = list_held(server, {"base_url": base_url, "limit": limit, "cursor": cursor})

    assume(not valid)
    refused(answer, 422)


def test_the_guard_is_read_and_takes_no_query(server: ApiThread) -> None:
    assert call(server.url, "GET", "/v1/guard").status == 200
    refused(call(server.url, "GET", "/v1/guard?limit=1"), 422)
