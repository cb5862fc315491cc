"""Property tests: generated bodies for the routes that store keys and install accounts.

Whatever arrives, a body the contract calls invalid is refused (422) in one line that
never repeats the key, and writes nothing; one it calls valid is never refused as
invalid. The contract is restated here from the document's words, not from
worker/web/inputs.py. The server runs in-process on PostgreSQL; nothing consumes
the checks it records.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from models import OrganizationIntegration, Team
from models.db import session_factory
from models.integration import LABEL_PATTERN
from tests.support.api import JSON, ApiThread, call
from worker.web.api import ApiConfig
from worker.web.client import ValidationClient

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ORG = uuid.uuid4().int % 10**12 + 1


@pytest.fixture(scope="module")
def server(
    postgres_url: str, fernet_key: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiThread]:
    broker = tmp_path_factory.mktemp("broker") / "broker.sqlite3"
    client = ValidationClient(
        f"ogvsqla+sqlite:///{broker}", postgres_url, encryption_keys=[fernet_key.encode()]
    )
    with client, ApiThread(client, ApiConfig(token=None, max_wait=0)) as running:
        yield running


@pytest.fixture(scope="module")
def integration(server: ApiThread) -> int:
    answer = call(
        server.url, "POST", f"/v1/organizations/{ORG}/integrations", body={"account": "fuzz"}
    )
    return int(answer.body["integration_id"])


@pytest.fixture(scope="module")
def rows(postgres_url: str) -> Any:
    def count() -> tuple[int, int]:
        with session_factory(postgres_url)() as session:
            teams = session.scalar(select(func.count()).select_from(Team)) or 0
            links = session.scalar(select(func.count()).select_from(OrganizationIntegration)) or 0
            return teams, links

    return count


def is_key(value: Any) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[\x21-\x7e]{1,200}", value) is not None


def is_label(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= 255
        and re.fullmatch(LABEL_PATTERN, value) is not None
        and value.isprintable()
    )


def is_team_body(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"label", "integration_key"}
        and is_label(body["label"])
        and is_key(body["integration_key"])
    )


keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=200)
near_keys = st.one_of(
    keys.map(lambda k: f"{k} {k}"),
    keys.map(lambda k: k + "\n"),
    keys.map(lambda k: k + "\u00e9"),
    st.text(max_size=250),
    st.sampled_from(["", "x" * 201, 7, None, True, ["k"], {"k": 1}]),
)
labels = st.text(min_size=1, max_size=40) | st.sampled_from(["ops", " ops", "ops ", "a\x00b", ""])
json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)


@st.composite
def team_bodies(draw: st.DrawFn) -> Any:
    body: dict[str, Any] = {
        "label": draw(labels),
        "integration_key": draw(keys | near_keys),
    }
    change = draw(st.sampled_from(["none", "drop", "add", "other"]))
    if change == "drop":
        del body[draw(st.sampled_from(sorted(body)))]
    elif change == "add":
        body[draw(st.sampled_from(["key", "team_id", "status", ""]))] = draw(json_scalars)
    elif change == "other":
        return draw(json_scalars | st.lists(json_scalars, max_size=3))
    return body


def secret_of(body: Any) -> str | None:
    """The body's key, when long enough not to be in an answer by chance (nor in the
    label, which a duplicate's refusal names)."""
    key = body.get("integration_key") if isinstance(body, dict) else None
    if not isinstance(key, str) or len(key) < 8 or key in str(body.get("label")):
        return None
    return key


@FUZZ
@given(body=team_bodies())
def test_a_team_body_is_stored_only_when_valid(
    server: ApiThread, integration: int, rows: Any, body: Any
) -> None:
    before = rows()
    path = f"/v1/organizations/{ORG}/integrations/{integration}/teams"

    answer = call(server.url, "POST", path, raw=json.dumps(body).encode(), headers=JSON)

    if is_team_body(body):
        assert answer.status in (201, 409), answer.text  # 409: a label used by an earlier example
    else:
        assert answer.status == 422, answer.text
        assert rows() == before
    if (secret := secret_of(body)) is not None:
        assert secret not in answer.text


@FUZZ
@given(key=keys | near_keys, extra=st.booleans())
def test_a_replacement_key_is_taken_only_when_valid(
    server: ApiThread, integration: int, rows: Any, key: Any, extra: bool
) -> None:
    path = f"/v1/organizations/{ORG}/integrations/{integration}/teams"
    team = call(server.url, "POST", path, body={"label": "replaced", "integration_key": "first"})
    team_id = f"{team.body['team']['team_id']}" if team.status == 201 else None
    if team_id is None:
        team_id = next(
            t["team_id"]
            for t in call(server.url, "GET", f"{path}?limit=100").body["teams"]
            if t["label"] == "replaced"
        )
    body: dict[str, Any] = {"integration_key": key, **({"label": "x"} if extra else {})}

    answer = call(server.url, "PUT", f"/v1/teams/{team_id}/key", body=body)

    assert answer.status == (200 if is_key(key) and not extra else 422), answer.text
    if (secret := secret_of(body)) is not None:
        assert secret not in answer.text


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {"account": st.text(max_size=300) | json_scalars},
        optional={
            "platform": st.sampled_from(["opsgenie", "opsgenie-eu", "jsm-ops", "nope", None, 1]),
            "probe": st.sampled_from(["authenticate", "alerts", "ping", None]),
            "base_url": st.sampled_from([None, "https://", "ftp://x/", "https://evil.test/"]),
            "key": json_scalars,
        },
    )
    | json_scalars
)
def test_an_integration_body_is_refused_in_one_line_and_writes_nothing_then(
    server: ApiThread, rows: Any, body: Any
) -> None:
    before = rows()
    org = uuid.uuid4().int % 10**12 + 1
    answer = call(
        server.url,
        "POST",
        f"/v1/organizations/{org}/integrations",
        raw=json.dumps(body).encode(),
        headers=JSON,
    )
    assume(answer.status != 201 and answer.status != 200)
    assert answer.status == 422, answer.text
    assert "\n" not in answer.body["error"]["message"]
    assert rows() == before
