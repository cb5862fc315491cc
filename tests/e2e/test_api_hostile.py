"""Hostile requests to a real `ogv api` process: nothing sent comes back or reaches the log.

aiohttp's HTTP parser refuses some requests before any application code runs (a
control byte in a header, a line over 8190 bytes, a broken chunk); left to itself,
aiohttp quotes the offending line, an API token included, in its 400 answer and in
its ERROR log. And a key pasted into `team_id` must come back from no refusal.
What the parser refuses is sent over a raw socket, the rest through http.client;
every answer and the whole log are searched.

The server runs twice: with aiohttp's C parser and JSON logs, and with its
pure-Python parser (AIOHTTP_NO_EXTENSIONS) and text logs.
"""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy import func, select

from models import ValidationRequest
from models.db import session_factory
from tests.support.api import AUTH, JSON, TOKEN, ApiProcess, api_env, call, exchange
from tests.support.stacks import service_env
from worker.testing.fake_opsgenie import FakeOpsgenie

# What a pasted Opsgenie key looks like (a UUID); its first group is not all digits.
KEY = "eb" + str(uuid.uuid4())[2:]
MALFORMED = {
    "error": {
        "code": "malformed_request",
        "message": "the request is not well-formed HTTP; nothing of it is repeated",
    }
}


@pytest.fixture(scope="module", params=["c-parser-json-logs", "python-parser-text-logs"])
def api(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    fake: FakeOpsgenie,
    postgres_url: str,
    redis_url: str,
    fernet_key: str,
) -> Iterator[ApiProcess]:
    data_dir = tmp_path_factory.mktemp("api")
    base = service_env(
        data_dir,
        fake,
        OGV_DATABASE_URL=postgres_url,
        OGV_BROKER_URL=redis_url,
        OGV_ENCRYPTION_KEYS=fernet_key,
    )
    if request.param == "c-parser-json-logs":
        env = api_env(base, OGV_LOG_FORMAT="json")
    else:
        env = api_env(base, OGV_LOG_FORMAT="text", AIOHTTP_NO_EXTENSIONS="1")
    server = ApiProcess(env, data_dir / "api.log").start()
    yield server
    server.stop()
    log = server.log_path.read_text()
    assert TOKEN not in log
    assert KEY not in log
    assert "Traceback" not in log


def log_after(server: ApiProcess, seen: int, lines: int = 1) -> str:
    """The log past offset `seen`, once `lines` more `api.request` lines are in it."""
    deadline = time.monotonic() + 10
    while True:
        text = server.log_path.read_text()[seen:]
        if text.count("api.request") >= lines or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def log_size(server: ApiProcess) -> int:
    return len(server.log_path.read_text())


def request_line(
    *headers: bytes, target: bytes = b"/v1/teams/1-x", method: bytes = b"GET"
) -> bytes:
    start = [method + b" " + target + b" HTTP/1.1", b"Host: api", b"Connection: close"]
    return b"\r\n".join([*start, *headers, b"", b""])


def bearer(after: bytes = b"") -> bytes:
    return b"Authorization: Bearer " + TOKEN.encode() + after


def gzip_body_that_is_not(text: bytes) -> bytes:
    """A body claiming gzip that is not: aiohttp's error would quote it."""
    return b"\r\n".join(
        [
            b"POST /v1/validations HTTP/1.1",
            b"Host: api",
            b"Connection: close",
            bearer(),
            b"Content-Type: application/json",
            b"Content-Encoding: gzip",
            b"Content-Length: " + str(len(text)).encode(),
            b"",
            text,
        ]
    )


HOSTILE: dict[str, bytes] = {
    "a control byte after the token": request_line(bearer(b"\x01")),
    "a NUL after the token": request_line(bearer(b"\x00")),
    "9 KB of padding after the token": request_line(bearer(b"p" * 9 * 1024)),
    "the token in a request line over 8 KB": request_line(
        target=b"/v1/teams/" + TOKEN.encode() + b"p" * 9 * 1024
    ),
    "the token in a header name": request_line(b"X-" + TOKEN.encode() + b"\x01: 1"),
    "the token as Content-Length": request_line(
        bearer(), b"Content-Length: " + TOKEN.encode(), method=b"POST", target=b"/v1/validations"
    ),
    "the token as Transfer-Encoding": request_line(
        bearer(), b"Transfer-Encoding: " + TOKEN.encode(), method=b"POST", target=b"/v1/validations"
    ),
    "129 headers holding the token": request_line(
        *(b"X-%d: " % n + TOKEN.encode() for n in range(129))
    ),
    "the token as a chunk size": request_line(
        bearer(),
        b"Content-Type: application/json",
        b"Transfer-Encoding: chunked",
        method=b"POST",
        target=b"/v1/validations",
    )
    + TOKEN.encode()
    + b"\r\n{}\r\n0\r\n\r\n",
    "the token in a body that is not gzip": gzip_body_that_is_not(TOKEN.encode() * 4),
}


@pytest.mark.parametrize("payload", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_request_aiohttp_cannot_read_gets_our_error_and_nothing_of_it(
    api: ApiProcess, payload: bytes
) -> None:
    seen = log_size(api)

    answer = exchange(api.url, payload)

    assert (answer.status, json.loads(answer.body)) == (400, MALFORMED), answer.raw
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    assert TOKEN.encode() not in answer.raw
    logged = log_after(api, seen)
    assert TOKEN not in logged
    assert "Traceback" not in logged
    assert logged.count("api.request") == 1


def test_the_token_as_the_method_is_refused_without_it(api: ApiProcess) -> None:
    # The C parser knows the methods and refuses the line (400); the pure-Python one
    # takes any token, so the router refuses the method (405). Neither repeats it.
    seen = log_size(api)

    answer = exchange(api.url, request_line(bearer(), method=TOKEN.encode()))

    assert (answer.status, json.loads(answer.body)["error"]["code"]) in {
        (400, "malformed_request"),
        (405, "method_not_allowed"),
    }
    assert TOKEN.encode() not in answer.raw
    logged = log_after(api, seen)
    assert TOKEN not in logged
    assert logged.count("api.request") == 1


def test_the_connection_serves_again_after_a_body_it_refused(api: ApiProcess) -> None:
    # The gzip refusal comes from the application, not the parser: the server must
    # stay healthy and keep answering on new connections.
    exchange(api.url, gzip_body_that_is_not(b"not gzip"))

    health = call(api.url, "GET", "/healthz", auth=False)

    assert health.status == 200


# -- a key where a team id belongs -----------------------------------------------------


def body(team_id: str = KEY, **more: Any) -> bytes:
    return json.dumps(
        {"organization_id": 1, "integration_id": 1, "team_id": team_id, **more}
    ).encode()


POSTS: dict[str, tuple[str, bytes, dict[str, str], int]] = {
    "the key alone": ("", body(), JSON, 422),
    "the key and an unknown field": ("", body(key=KEY), JSON, 422),
    "the key and a string id": ("", body(organization_id="1"), JSON, 422),
    "the key with a NUL": ("", body(KEY + "\x00"), JSON, 422),
    "the key ten times": ("", body(KEY * 10), JSON, 422),
    "the key behind a space": ("", body("1- " + KEY), JSON, 422),
    "the key and a bad wait": ("?wait=soon", body(), JSON, 422),
    "the key and wait twice": ("?wait=1&wait=2", body(), JSON, 422),
    "the key and a bad Idempotency-Key": ("", body(), {**JSON, "Idempotency-Key": "é"}, 422),
    "the key as text/plain": ("", body(), {"Content-Type": "text/plain"}, 415),
    "the key in broken JSON": ("", body()[:-1], JSON, 400),
    "the key in a body over 16 KB": ("", body(KEY * 500), JSON, 413),
}


@pytest.mark.parametrize(("query", "raw", "headers", "status"), POSTS.values(), ids=POSTS.keys())
def test_a_key_posted_as_team_id_comes_back_from_no_refusal(
    api: ApiProcess, query: str, raw: bytes, headers: dict[str, str], status: int
) -> None:
    seen = log_size(api)

    answer = call(api.url, "POST", f"/v1/validations{query}", raw=raw, headers=headers)

    assert answer.status == status
    assert KEY not in answer.text
    assert KEY not in log_after(api, seen)
    assert stored_with_the_key(api) == 0


def test_a_key_posted_without_the_token_or_as_gzip_is_refused_without_it(
    api: ApiProcess,
) -> None:
    seen = log_size(api)

    unauthorized = call(api.url, "POST", "/v1/validations", raw=body(), headers=JSON, auth=False)
    wrong_method = call(api.url, "PUT", "/v1/validations", raw=body(), headers=JSON)
    not_gzip = exchange(api.url, gzip_body_that_is_not(body()))

    assert (unauthorized.status, wrong_method.status, not_gzip.status) == (401, 405, 400)
    assert KEY not in unauthorized.text + wrong_method.text
    assert KEY.encode() not in not_gzip.raw
    assert KEY not in log_after(api, seen, lines=3)
    assert stored_with_the_key(api) == 0


GETS: dict[str, tuple[str, bool, int]] = {
    "the key": (quote(KEY), True, 422),
    "the key and a query": (f"{quote(KEY)}?key={quote(KEY)}", True, 422),
    "the key and a NUL": (quote(KEY + "\x00"), True, 422),
    "the key ten times": (quote(KEY * 10), True, 422),
    "the key without the token": (quote(KEY), False, 401),
    "the key in a well-formed id": (quote(f"1-{KEY}"), True, 404),
}


@pytest.mark.parametrize(("segment", "auth", "status"), GETS.values(), ids=GETS.keys())
def test_a_key_as_a_team_id_in_the_path_comes_back_from_no_refusal(
    api: ApiProcess, segment: str, auth: bool, status: int
) -> None:
    seen = log_size(api)

    answer = call(api.url, "GET", f"/v1/teams/{segment}", auth=auth)

    assert answer.status == status
    assert KEY not in answer.text
    assert KEY not in log_after(api, seen)


def stored_with_the_key(api: ApiProcess) -> int:
    query = select(func.count()).select_from(ValidationRequest)
    with session_factory(api.env["OGV_DATABASE_URL"])() as session:
        return session.scalar(query.where(ValidationRequest.team_id.contains(KEY))) or 0


def test_requests_sent_with_every_client_header_log_none_of_them(api: ApiProcess) -> None:
    seen = log_size(api)
    secret = f"secret-{uuid.uuid4().hex}"

    answer = call(
        api.url,
        "GET",
        f"/v1/teams/1-x?cursor={secret}",
        headers={**AUTH, "Cookie": secret, "X-Forwarded-For": secret, "User-Agent": secret},
    )

    assert answer.status == 404  # the team route takes (and ignores) a query
    logged = log_after(api, seen)
    assert secret not in logged
    assert TOKEN not in logged


def test_a_body_that_is_gzip_is_read(api: ApiProcess) -> None:
    # The refusals above are of broken encodings, not of Content-Encoding itself.
    raw = gzip.compress(body("1-x"))
    headers = {**JSON, "Content-Encoding": "gzip"}

    answer = call(api.url, "POST", "/v1/validations", raw=raw, headers=headers)

    assert answer.status == 202
