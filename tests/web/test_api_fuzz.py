"""Property tests: generated bad input to every endpoint of the HTTP API.

Whatever arrives, the answer is a documented JSON error (never a 5xx, never a
traceback), and refused input writes nothing: `validation_requests` has as many
rows after each example as before. The server runs in-process on PostgreSQL and
Redis; no worker is needed, since nothing may be queued.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from models import ValidationRequest
from models.db import session_factory
from models.integration import TEAM_ID_PATTERN
from tests.support.api import JSON, TOKEN, Answer, ApiThread, call
from tests.support.services import NAMESPACE
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient
from worker.web.inputs import DECIMAL_PATTERN, IDEMPOTENCY_KEY_PATTERN

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FIELDS = ("organization_id", "integration_id", "team_id")


@pytest.fixture(scope="module")
def server(postgres_url: str, redis_url: str) -> Iterator[ApiThread]:
    client = ValidationClient(redis_url, postgres_url, queue=NAMESPACE)
    with client, ApiThread(client, ApiConfig(token=TOKEN, max_wait=1)) as running:
        yield running


@pytest.fixture(scope="module")
def rows(postgres_url: str) -> Any:
    def count() -> int:
        with session_factory(postgres_url)() as session:
            return session.scalar(select(func.count()).select_from(ValidationRequest)) or 0

    return count


def is_valid_submission(body: Any) -> bool:
    """The contract, restated independently of worker/web/api.py (the pattern is the
    document's)."""
    if not isinstance(body, dict) or set(body) != set(FIELDS):
        return False
    org, integration, team = (body[f] for f in FIELDS)
    return (
        type(org) is int
        and 1 <= org < 2**63
        and type(integration) is int
        and 1 <= integration < 2**31
        and isinstance(team, str)
        and len(team) <= 300
        and re.fullmatch(TEAM_ID_PATTERN, team) is not None
    )


def refused(answer: Answer, *statuses: int) -> None:
    assert answer.status in statuses, (answer.status, answer.text)
    assert set(answer.body["error"]) == {"code", "message"}


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
near_miss_values = st.one_of(
    json_values,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=400),
    st.sampled_from([0, -1, 2**31, 2**63, True, False, "1", 1.0, "\x00", "a\ud800", "x" * 301]),
)
near_miss_bodies = st.dictionaries(
    st.sampled_from([*FIELDS, "key", "integration_key", ""]), near_miss_values, max_size=5
)
header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=300,
)


@FUZZ
@given(body=st.one_of(json_values, near_miss_bodies))
def test_post_refuses_bad_json_bodies(server: ApiThread, rows: Any, body: Any) -> None:
    assume(not is_valid_submission(body))
    before = rows()
    raw = json.dumps(body).encode()
    answer = call(server.url, "POST", "/v1/validations", raw=raw, headers=JSON)
    refused(answer, 422)
    assert rows() == before


@FUZZ
@given(raw=st.binary(max_size=2000) | st.text(max_size=500).map(str.encode))
def test_post_refuses_bytes_that_are_not_a_submission(
    server: ApiThread, rows: Any, raw: bytes
) -> None:
    with contextlib.suppress(ValueError, RecursionError):  # not JSON: certainly refused
        assume(not is_valid_submission(json.loads(raw)))
    before = rows()
    answer = call(server.url, "POST", "/v1/validations", raw=raw, headers=JSON)
    refused(answer, 400, 422)
    assert rows() == before


VALID_BODY = {"organization_id": 1, "integration_id": 1, "team_id": "1-fuzz"}


def wait_is_valid(raw: str) -> bool:
    return re.fullmatch(DECIMAL_PATTERN, raw) is not None


@FUZZ
@given(
    query=st.dictionaries(st.text(max_size=10), st.text(max_size=20), min_size=1, max_size=3),
    content_type=st.none() | st.sampled_from(["text/plain", "application/jsonx", "", "json"]),
    idempotency_key=st.none() | header_text,
)
def test_post_refuses_bad_queries_headers_and_media_types(
    server: ApiThread,
    rows: Any,
    query: dict[str, str],
    content_type: str | None,
    idempotency_key: str | None,
) -> None:
    good_query = set(query) == {"wait"} and wait_is_valid(query["wait"])
    # HTTP drops the spaces around a header value before the server sees it.
    good_key = idempotency_key is None or (
        len(idempotency_key.strip(" ")) <= 200
        and re.fullmatch(IDEMPOTENCY_KEY_PATTERN, idempotency_key.strip(" ")) is not None
    )
    assume(not (good_query and good_key and content_type is None))
    headers = {"Content-Type": content_type or "application/json"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    before = rows()
    answer = call(
        server.url,
        "POST",
        f"/v1/validations?{urlencode(query)}",
        raw=json.dumps(VALID_BODY).encode(),
        headers=headers,
    )
    refused(answer, 415, 422)
    assert rows() == before


@FUZZ
@given(
    segment=st.text(max_size=60),
    query=st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3),
)
def test_gets_with_unknown_ids_and_bad_queries(
    server: ApiThread, rows: Any, segment: str, query: dict[str, str]
) -> None:
    quoted, encoded = quote(segment, safe=""), urlencode(query)
    before = rows()
    for path in (
        f"/v1/validations/{quoted}",
        f"/v1/teams/{quoted}",
        f"/v1/organizations/{quoted}/teams?{encoded}",
        f"/v1/organizations/1/teams?{encoded}",
    ):
        answer = call(server.url, "GET", path)
        assert answer.status < 500, (path, answer.text)
        if answer.status != 200:
            refused(answer, 404, 405, 422)
    assert rows() == before


@FUZZ
@given(
    authorization=st.none() | header_text,
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    path=st.sampled_from(
        ["/v1/validations", "/v1/validations/x", "/v1/teams/1-x", "/v1/organizations/1/teams", "/"]
    ),
)
def test_without_the_token_everything_is_401(
    server: ApiThread, rows: Any, authorization: str | None, method: str, path: str
) -> None:
    assume(authorization is None or TOKEN not in authorization)
    headers = {**JSON, **({"Authorization": authorization} if authorization is not None else {})}
    before = rows()
    answer = call(
        server.url,
        method,
        path,
        raw=json.dumps(VALID_BODY).encode(),
        headers=headers,
        auth=False,
    )
    refused(answer, 401)
    assert rows() == before
