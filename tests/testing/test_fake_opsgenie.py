"""The fake Opsgenie, exercised over real HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.services import ROOT
from worker.testing import scenario as scenario_module
from worker.testing.fake_opsgenie import HOST_PREFIXES, FakeOpsgenie, RecordedCall
from worker.testing.scenario import (
    BEHAVIOURS,
    HOST_BEHAVIOURS,
    HOSTS,
    Host,
    KeyScenario,
    Scenario,
)

AUTHENTICATE = "v2/integrations/authenticate"
ALERTS = "v2/alerts?limit=1"
ENDPOINTS = [AUTHENTICATE, ALERTS]
# Every probe every host serves: JSM Ops has no authenticate (SPEC section 7).
HOST_ENDPOINTS = [
    ("opsgenie", AUTHENTICATE),
    ("opsgenie", ALERTS),
    ("opsgenie-eu", AUTHENTICATE),
    ("opsgenie-eu", ALERTS),
    ("jsm-ops", ALERTS),
]


@dataclass
class Answer:
    status: int
    headers: Message[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Hand a 3xx back as it came, as the validator does (SPEC section 4)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def http(
    base_url: str,
    path: str,
    method: str = "GET",
    payload: Any = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> Answer:
    """One request with urllib (which, unlike aiohttp, never retries on its own)."""
    data = None if payload is None else json.dumps(payload).encode()
    all_headers = {"Content-Type": "application/json"} if data is not None else {}
    request = urllib.request.Request(
        base_url + path, data=data, method=method, headers={**all_headers, **(headers or {})}
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Answer(error.code, error.headers, error.read())


def probe(base_url: str, path: str, key: str | None) -> Answer:
    """A probe as the validator sends it (SPEC section 4)."""
    headers = {"Accept": "application/json"}
    if key is not None:
        headers["Authorization"] = f"GenieKey {key}"
    if path == AUTHENTICATE:
        return http(base_url, path, "POST", {"type": "sentry"}, headers)
    return http(base_url, path, "GET", None, headers)


def assert_error_answer(answer: Answer, status: int, message: str) -> None:
    body = answer.json
    assert answer.status == status
    assert body == {"message": message, "took": 0.01, "requestId": body["requestId"]} | (
        {"code": 40301} if status == 403 else {}
    )
    assert answer.headers["X-Request-ID"] == body["requestId"]
    assert answer.headers["Content-Type"].startswith("application/json")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpsgenie]:
    with FakeOpsgenie() as fake:
        yield fake


@pytest.fixture
def fake(server: FakeOpsgenie) -> Callable[..., FakeOpsgenie]:
    """Give the shared server a fresh scenario: ``fake(keys={...}, **scenario_fields)``."""

    def configure(keys: Mapping[str, KeyScenario] | None = None, **fields: Any) -> FakeOpsgenie:
        server.set_scenario(Scenario(keys=dict(keys or {}), **fields))
        return server

    return configure


# --- answers, behaviour by behaviour ---------------------------------------------------


def test_valid_key_authenticates(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"good": KeyScenario(account="acme")})

    answer = probe(og.url, AUTHENTICATE, "good")

    body = answer.json
    assert answer.status == 200
    assert body == {
        "result": "Integration authenticated",
        "took": 0.01,
        "requestId": body["requestId"],
    }
    assert answer.headers["X-Request-ID"] == body["requestId"]
    assert og.requests() == [
        RecordedCall(
            key="good",
            account="acme",
            method="POST",
            path="/v2/integrations/authenticate",
            query={},
            body={"type": "sentry"},
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            at=og.requests()[0].at,
            status=200,
        )
    ]


def test_valid_key_reads_alerts(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"good": KeyScenario()})

    answer = probe(og.url, ALERTS, "good")

    body = answer.json
    assert answer.status == 200
    assert body == {"data": [], "paging": {}, "took": 0.01, "requestId": body["requestId"]}
    assert answer.headers["X-Request-ID"] == body["requestId"]
    [call] = og.requests()
    assert (call.method, call.path, call.query) == ("GET", "/v2/alerts", {"limit": "1"})
    assert call.body is None


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("key_scenario", "status", "message"),
    [
        (KeyScenario("invalid_key"), 401, "Integration key is not recognised."),
        (
            KeyScenario("no_access"),
            403,
            "Integration is not allowed to use configuration API; enable its access.",
        ),
        (KeyScenario("unprocessable"), 422, "Request could not be processed."),
        (KeyScenario("server_error"), 503, "Service is temporarily unavailable."),
        (KeyScenario("server_error", status=502), 502, "Service is temporarily unavailable."),
    ],
)
def test_error_behaviours(
    fake: Callable[..., FakeOpsgenie],
    path: str,
    key_scenario: KeyScenario,
    status: int,
    message: str,
) -> None:
    og = fake({"k": key_scenario})

    assert_error_answer(probe(og.url, path, "k"), status, message)
    assert [call.status for call in og.requests()] == [status]


def test_no_config_access_is_refused_on_authenticate_only(
    fake: Callable[..., FakeOpsgenie],
) -> None:
    og = fake({"k": KeyScenario("no_config_access", account="acme")})

    assert_error_answer(
        probe(og.url, AUTHENTICATE, "k"),
        403,
        "Integration is not allowed to use configuration API; enable its access.",
    )
    alerts = probe(og.url, ALERTS, "k")

    body = alerts.json
    assert alerts.status == 200
    assert body == {"data": [], "paging": {}, "took": 0.01, "requestId": body["requestId"]}
    assert [(c.method, c.path, c.status) for c in og.requests()] == [
        ("POST", "/v2/integrations/authenticate", 403),
        ("GET", "/v2/alerts", 200),
    ]
    assert og.account_calls("acme") == 2


@pytest.mark.parametrize("path", ENDPOINTS)
def test_unknown_key_gets_the_default(fake: Callable[..., FakeOpsgenie], path: str) -> None:
    og = fake({"good": KeyScenario()})

    assert_error_answer(probe(og.url, path, "nobody"), 401, "Integration key is not recognised.")

    og.set_scenario(Scenario(default=KeyScenario("valid", account="open")))
    assert probe(og.url, path, "nobody").status == 200
    assert og.account_calls("open") == 1


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("authorization", [None, "Bearer abc", "GenieKey ", "GenieKey a b"])
def test_missing_or_malformed_authorization_is_401(
    fake: Callable[..., FakeOpsgenie], path: str, authorization: str | None
) -> None:
    og = fake({"abc": KeyScenario()})
    headers = {} if authorization is None else {"Authorization": authorization}
    method, payload = ("POST", {"type": "sentry"}) if path == AUTHENTICATE else ("GET", None)

    answer = http(og.url, path, method, payload, headers)

    assert_error_answer(answer, 401, "Integration key is not recognised.")
    assert (og.calls(""), og.account_calls("unknown"), og.calls("abc")) == (1, 1, 0)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_throttle_answers_429_with_rate_limit_headers(
    fake: Callable[..., FakeOpsgenie], path: str
) -> None:
    og = fake({"busy": KeyScenario("throttle", period_seconds=60)})

    answer = probe(og.url, path, "busy")

    assert_error_answer(
        answer, 429, "Too many requests for this account; retry after the rate-limit period."
    )
    assert answer.headers["X-RateLimit-State"] == "THROTTLED"
    assert answer.headers["X-RateLimit-Reason"] == "ACCOUNT"
    assert answer.headers["X-RateLimit-Period-In-Sec"] == "60"
    assert probe(og.url, path, "busy").status == 200


@pytest.mark.parametrize("behaviour", ["throttle", "server_error"])
def test_fails_times_then_answers_200_across_endpoints(
    fake: Callable[..., FakeOpsgenie], behaviour: str
) -> None:
    og = fake({"k": KeyScenario.from_dict({"behaviour": behaviour, "times": 3})})
    failing = 429 if behaviour == "throttle" else 503

    statuses = [probe(og.url, ENDPOINTS[i % 2], "k").status for i in range(5)]

    assert statuses == [failing, failing, failing, 200, 200]
    assert og.calls("k") == 5


@pytest.mark.parametrize("behaviour", ["throttle", "server_error"])
def test_times_minus_one_fails_forever(fake: Callable[..., FakeOpsgenie], behaviour: str) -> None:
    og = fake({"k": KeyScenario.from_dict({"behaviour": behaviour, "times": -1})})
    failing = 429 if behaviour == "throttle" else 503

    assert [probe(og.url, ALERTS, "k").status for _ in range(6)] == [failing] * 6


def test_hang_times_then_answers_200_at_once(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"k": KeyScenario("hang", times=1)}, hang_seconds=2.0)

    with pytest.raises(TimeoutError):
        http(og.url, ALERTS, headers={"Authorization": "GenieKey k"}, timeout=0.2)
    started = time.monotonic()
    assert probe(og.url, ALERTS, "k").status == 200
    assert time.monotonic() - started < 1.0


def test_reset_times_then_answers_200(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"k": KeyScenario("reset", times=2)})

    for _ in range(2):
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            probe(og.url, ALERTS, "k")
    assert probe(og.url, AUTHENTICATE, "k").status == 200
    assert [call.status for call in og.requests()] == [None, None, 200]


def test_hang_and_reset_without_times_fail_forever(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"rst": KeyScenario("reset"), "stuck": KeyScenario("hang")}, hang_seconds=0.05)

    for _ in range(3):
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            probe(og.url, ALERTS, "rst")
    started = time.monotonic()
    assert [probe(og.url, ALERTS, "stuck").status for _ in range(3)] == [200] * 3
    assert time.monotonic() - started >= 0.15


def test_times_zero_answers_200_at_once(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"k": KeyScenario("server_error", times=0)})

    assert probe(og.url, ALERTS, "k").status == 200


def test_latency_of_scenario_and_key_add_up(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"slow": KeyScenario(latency_ms=150), "fast": KeyScenario()}, latency_ms=100)

    def timed(key: str) -> float:
        started = time.monotonic()
        assert probe(og.url, ALERTS, key).status == 200
        return time.monotonic() - started

    assert 0.25 <= timed("slow") < 1.0
    assert 0.10 <= timed("fast") < 0.25


@pytest.mark.parametrize("path", ENDPOINTS)
def test_hang_answers_200_after_hang_seconds(fake: Callable[..., FakeOpsgenie], path: str) -> None:
    og = fake({"stuck": KeyScenario("hang")}, hang_seconds=0.3)

    started = time.monotonic()
    answer = probe(og.url, path, "stuck")

    assert answer.status == 200
    assert time.monotonic() - started >= 0.3


def test_hang_outlasts_a_client_timeout(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"stuck": KeyScenario("hang")}, hang_seconds=2.0)

    with pytest.raises(TimeoutError):
        http(og.url, ALERTS, headers={"Authorization": "GenieKey stuck"}, timeout=0.2)


@pytest.mark.parametrize("path", ENDPOINTS)
def test_reset_drops_the_connection_without_answer(
    fake: Callable[..., FakeOpsgenie], path: str
) -> None:
    og = fake({"rst": KeyScenario("reset")})

    with pytest.raises((ConnectionError, urllib.error.URLError)):
        probe(og.url, path, "rst")

    assert [(call.key, call.status) for call in og.requests()] == [("rst", None)]


def test_reset_is_a_connection_error_for_aiohttp(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"rst": KeyScenario("reset")})

    async def post() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                og.url + AUTHENTICATE,
                json={"type": "sentry"},
                headers={"Authorization": "GenieKey rst"},
            ) as response,
        ):
            await response.read()

    with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
        asyncio.run(post())


@pytest.mark.parametrize("path", ENDPOINTS)
def test_large_body(fake: Callable[..., FakeOpsgenie], path: str) -> None:
    og = fake({"big": KeyScenario("large_body")}, large_body_bytes=1024 * 1024)

    answer = probe(og.url, path, "big")

    assert answer.status == 200
    assert len(answer.body) == 1024 * 1024
    assert answer.json["requestId"] == answer.headers["X-Request-ID"]


# --- counting --------------------------------------------------------------------------


def test_counts_calls_per_key_and_account(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake(
        {
            "a1": KeyScenario(account="acme"),
            "a2": KeyScenario("invalid_key", account="acme"),
            "b1": KeyScenario(account="beta"),
        }
    )
    for key in ["a1", "a1", "a2", "b1"]:
        probe(og.url, ALERTS, key)

    assert [og.calls(k) for k in ["a1", "a2", "b1", "zz"]] == [2, 1, 1, 0]
    assert [og.account_calls(a) for a in ["acme", "beta", "none"]] == [3, 1, 0]
    assert [(c.key, c.account, c.status) for c in og.requests()] == [
        ("a1", "acme", 200),
        ("a1", "acme", 200),
        ("a2", "acme", 401),
        ("b1", "beta", 200),
    ]

    og.reset()
    assert (og.calls("a1"), og.account_calls("acme"), og.requests()) == (0, 0, [])


def test_an_account_separator_names_the_account_of_unlisted_keys(
    fake: Callable[..., FakeOpsgenie],
) -> None:
    """The benchmarks' fleet: no entry per key, each key's account read from its text."""
    og = fake(
        {"acme.listed": KeyScenario("invalid_key", account="beta")},
        default=KeyScenario("valid"),
        account_separator=".",
    )
    answers = [probe(og.url, ALERTS, k).status for k in ["acme.1", "acme.2", "acme.listed", "x"]]
    assert answers == [200, 200, 401, 200]
    assert [og.account_calls(a) for a in ["acme", "beta", "default"]] == [2, 1, 1]
    assert Scenario.from_json(og.scenario.to_json()).account_separator == "."
    with pytest.raises(ValueError, match="account_separator must be a non-empty string"):
        Scenario(account_separator="")


def test_max_calls_per_second_uses_a_sliding_window(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"a": KeyScenario(account="acme")})
    for _ in range(4):
        probe(og.url, ALERTS, "a")
    time.sleep(1.05)
    for _ in range(2):
        probe(og.url, ALERTS, "a")

    assert og.max_calls_per_second("acme") == 4
    assert og.max_calls_per_second("nobody") == 0


def test_account_rate_limit_is_enforced_per_account(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake(
        {
            "a1": KeyScenario(account="acme"),
            "a2": KeyScenario("server_error", account="acme"),
            "b1": KeyScenario(account="beta"),
        },
        account_rate_per_second=3,
    )

    acme = [probe(og.url, ALERTS, key) for key in ["a1", "a1", "a1", "a2", "a1"]]
    beta = [probe(og.url, ALERTS, "b1").status for _ in range(3)]

    assert [answer.status for answer in acme] == [200, 200, 200, 429, 429]
    assert acme[3].headers["X-RateLimit-Period-In-Sec"] == "1"
    assert acme[3].headers["X-RateLimit-Reason"] == "ACCOUNT"
    assert beta == [200, 200, 200]
    time.sleep(1.0)
    # The throttled call did not use up a2's one server error.
    assert probe(og.url, ALERTS, "a2").status == 503


def test_set_key_and_set_scenario_reset_attempts(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"k": KeyScenario("throttle", times=1)})
    assert [probe(og.url, ALERTS, "k").status for _ in range(2)] == [429, 200]

    og.set_key("k", KeyScenario("throttle", times=1))
    assert [probe(og.url, ALERTS, "k").status for _ in range(2)] == [429, 200]
    assert og.calls("k") == 4

    og.set_scenario(Scenario(keys={"k": KeyScenario("throttle", times=1)}))
    assert og.calls("k") == 0
    assert probe(og.url, ALERTS, "k").status == 429


def test_set_key_does_not_change_the_callers_scenario(server: FakeOpsgenie) -> None:
    scenario = Scenario()
    server.set_scenario(scenario)

    server.set_key("new", KeyScenario())

    assert scenario.keys == {}
    assert server.scenario.keys == {"new": KeyScenario()}


# --- the admin API ---------------------------------------------------------------------


def test_admin_api_drives_the_fake(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake()
    scenario = {"keys": {"a": {"behaviour": "valid", "account": "acme"}}, "latency_ms": 0}

    assert http(og.url, "_fake/scenario", "PUT", scenario).status == 200
    put_key = http(og.url, "_fake/keys/b", "PUT", {"behaviour": "no_access", "account": "acme"})
    assert put_key.json == KeyScenario("no_access", account="acme").to_dict()
    expected = Scenario(
        keys={"a": KeyScenario(account="acme"), "b": KeyScenario("no_access", account="acme")}
    )
    assert http(og.url, "_fake/scenario").json == expected.to_dict()

    statuses = [probe(og.url, ALERTS, key).status for key in ["a", "a", "b", "x"]]

    assert statuses == [200, 200, 403, 401]
    assert http(og.url, "_fake/stats").json == {
        "calls_by_key": {"a": 2, "b": 1, "x": 1},
        "calls_by_account": {"acme": 3, "default": 1},
        "calls_by_host": {"opsgenie": 4},
        "max_calls_per_second_by_account": {"acme": 3, "default": 1},
        "total": 4,
    }
    assert http(og.url, "_fake/reset", "POST").status == 200
    assert http(og.url, "_fake/stats").json == {
        "calls_by_key": {},
        "calls_by_account": {},
        "calls_by_host": {},
        "max_calls_per_second_by_account": {},
        "total": 0,
    }


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("_fake/scenario", {"keys": {"a": {"behaviour": "sleepy"}}}),
        ("_fake/scenario", {"surprise": 1}),
        ("_fake/scenario", [1, 2]),
        ("_fake/keys/a", {"times": -2}),
        ("_fake/keys/a", {"behaviour": "server_error", "status": 404}),
    ],
)
def test_admin_api_rejects_bad_scenarios(
    fake: Callable[..., FakeOpsgenie], path: str, payload: Any
) -> None:
    og = fake({"a": KeyScenario()})

    answer = http(og.url, path, "PUT", payload)

    assert answer.status == 400
    assert set(answer.json) == {"message", "took", "requestId"}
    assert og.scenario == Scenario(keys={"a": KeyScenario()})


def test_admin_api_rejects_a_body_that_is_not_json(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake()
    request = urllib.request.Request(og.url + "_fake/scenario", data=b"{nope", method="PUT")

    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=5)

    assert error.value.code == 400
    error.value.close()


def test_unknown_route_answers_json_404(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake()

    answer = http(og.url, "v2/heartbeats")

    assert answer.status == 404
    assert answer.json["message"] == "Not Found"


# --- three hosts -----------------------------------------------------------------------


def host_probe(og: FakeOpsgenie, host: Host, path: str, key: str | None) -> Answer:
    return probe(og.base_url_for(host), path, key)


def assert_success(answer: Answer, path: str) -> None:
    """Opsgenie's success body for ``path`` (SPEC sections 4 and 6), whole."""
    body = answer.json
    success: dict[str, Any] = {"result": "Integration authenticated"}
    if path != AUTHENTICATE:
        success = {"data": [], "paging": {}}
    assert answer.status == 200
    assert body == success | {"took": 0.01, "requestId": body["requestId"]}
    assert answer.headers["X-Request-ID"] == body["requestId"]
    assert answer.headers["Content-Type"].startswith("application/json")


def test_each_host_has_its_base_url(server: FakeOpsgenie) -> None:
    root = server.url

    assert HOST_PREFIXES == {
        "opsgenie": "/",
        "opsgenie-eu": "/eu/",
        "jsm-ops": "/jsm/ops/integration/",
    }
    assert server.base_url == server.base_url_for("opsgenie") == root
    assert server.base_urls() == {
        "opsgenie": root,
        "opsgenie-eu": root + "eu/",
        "jsm-ops": root + "jsm/ops/integration/",
    }


def test_base_url_needs_a_running_fake() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        FakeOpsgenie().base_url_for("jsm-ops")


@pytest.mark.parametrize(("host", "path"), HOST_ENDPOINTS)
def test_valid_key_succeeds_on_every_host(
    fake: Callable[..., FakeOpsgenie], host: Host, path: str
) -> None:
    og = fake({"good": KeyScenario(account="acme")})

    assert_success(host_probe(og, host, path, "good"), path)

    [call] = og.requests()
    prefix = HOST_PREFIXES[host]
    route = AUTHENTICATE if path == AUTHENTICATE else "v2/alerts"
    assert call == RecordedCall(
        key="good",
        account="acme",
        method="POST" if path == AUTHENTICATE else "GET",
        path=prefix + route,
        query={} if path == AUTHENTICATE else {"limit": "1"},
        body={"type": "sentry"} if path == AUTHENTICATE else None,
        headers={"Accept": "application/json"}
        | ({"Content-Type": "application/json"} if path == AUTHENTICATE else {}),
        at=call.at,
        status=200,
        host=host,
    )


def test_jsm_ops_has_no_authenticate(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"k": KeyScenario("server_error", times=1, account="acme")})

    answer = host_probe(og, "jsm-ops", AUTHENTICATE, "k")

    assert_error_answer(answer, 404, "Not Found")
    assert [(c.key, c.account, c.host, c.path, c.status) for c in og.requests()] == [
        ("k", "acme", "jsm-ops", "/jsm/ops/integration/v2/integrations/authenticate", 404)
    ]
    # The key was never looked at: its one server error is still to come.
    assert [host_probe(og, "jsm-ops", ALERTS, "k").status for _ in range(2)] == [503, 200]


def test_jsm_ops_serves_nothing_else_under_its_prefix(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"k": KeyScenario()})

    answer = http(og.base_url_for("jsm-ops"), "v2/heartbeats")

    assert answer.status == 404
    assert answer.json["message"] == "Not Found"


@pytest.mark.parametrize(("host", "path"), HOST_ENDPOINTS)
@pytest.mark.parametrize(
    ("behaviour", "status", "message"),
    [
        ("malformed_key", 422, "Key format is not valid!"),
        ("retired", 410, "This API is deprecated and no longer available"),
        ("invalid_key", 401, "Integration key is not recognised."),
    ],
)
def test_opsgenie_json_answers_on_every_host(
    fake: Callable[..., FakeOpsgenie],
    host: Host,
    path: str,
    behaviour: str,
    status: int,
    message: str,
) -> None:
    og = fake({"k": KeyScenario.from_dict(behaviour)})

    assert_error_answer(host_probe(og, host, path, "k"), status, message)
    assert [(c.host, c.status) for c in og.requests()] == [(host, status)]


def assert_html_answer(answer: Answer, status: int, marker: str) -> None:
    """An intermediary's page: HTML, and nothing that passes for Opsgenie's."""
    assert answer.status == status
    assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "X-Request-ID" not in answer.headers
    assert answer.body.lstrip().startswith(b"<")
    assert marker in answer.body.decode()


@pytest.mark.parametrize(("host", "path"), HOST_ENDPOINTS)
@pytest.mark.parametrize(
    ("behaviour", "status", "marker"),
    [
        ("redirect", 302, 'href="https://id.atlassian.com/login"'),
        ("html_404", 404, "<center>nginx</center>"),
        ("gateway_timeout", 408, "408 Request Time-out"),
        ("captive_portal", 200, 'type="password"'),
    ],
)
def test_intermediaries_answer_html_on_every_host(
    fake: Callable[..., FakeOpsgenie],
    host: Host,
    path: str,
    behaviour: str,
    status: int,
    marker: str,
) -> None:
    og = fake({"k": KeyScenario.from_dict(behaviour)})

    answer = host_probe(og, host, path, "k")

    assert_html_answer(answer, status, marker)
    if behaviour == "redirect":
        assert answer.headers["Location"] == "https://id.atlassian.com/login"
    assert [(c.host, c.status) for c in og.requests()] == [(host, status)]


@pytest.mark.parametrize(("host", "path"), HOST_ENDPOINTS)
def test_empty_200_has_an_empty_body(
    fake: Callable[..., FakeOpsgenie], host: Host, path: str
) -> None:
    og = fake({"k": KeyScenario("empty_200")})

    answer = host_probe(og, host, path, "k")

    assert (answer.status, answer.body) == (200, b"")
    assert answer.headers["Content-Length"] == "0"
    assert "X-Request-ID" not in answer.headers


@pytest.mark.parametrize(
    ("behaviour", "valid_on"), [("eu_only", "opsgenie-eu"), ("jsm_only", "jsm-ops")]
)
@pytest.mark.parametrize(("host", "path"), HOST_ENDPOINTS)
def test_eu_only_and_jsm_only_are_valid_on_their_host_alone(
    fake: Callable[..., FakeOpsgenie], host: Host, path: str, behaviour: str, valid_on: str
) -> None:
    og = fake({"k": KeyScenario.from_dict(behaviour)})

    answer = host_probe(og, host, path, "k")

    if host == valid_on:
        assert_success(answer, path)
    else:
        assert_error_answer(answer, 401, "Integration key is not recognised.")


def test_times_counts_attempts_across_hosts(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"k": KeyScenario("throttle", times=2)})

    statuses = [
        host_probe(og, "opsgenie", ALERTS, "k").status,
        host_probe(og, "jsm-ops", ALERTS, "k").status,
        host_probe(og, "opsgenie-eu", AUTHENTICATE, "k").status,
    ]

    assert statuses == [429, 429, 200]


def test_missing_authorization_is_recorded_on_its_host(
    fake: Callable[..., FakeOpsgenie],
) -> None:
    og = fake()

    answer = host_probe(og, "opsgenie-eu", ALERTS, None)

    assert_error_answer(answer, 401, "Integration key is not recognised.")
    assert [(c.key, c.account, c.host) for c in og.requests()] == [("", "unknown", "opsgenie-eu")]


def test_counts_calls_per_host(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"a": KeyScenario(account="acme"), "b": KeyScenario("jsm_only", account="beta")})
    calls: list[tuple[Host, str, str]] = [
        ("opsgenie", ALERTS, "a"),
        ("opsgenie-eu", AUTHENTICATE, "a"),
        ("jsm-ops", ALERTS, "b"),
        ("jsm-ops", ALERTS, "a"),
        ("jsm-ops", AUTHENTICATE, "b"),
    ]
    for host, path, key in calls:
        host_probe(og, host, path, key)

    assert [og.host_calls(host) for host in HOST_PREFIXES] == [1, 1, 3]
    assert http(og.url, "_fake/stats").json == {
        "calls_by_key": {"a": 3, "b": 2},
        "calls_by_account": {"acme": 3, "beta": 2},
        "calls_by_host": {"opsgenie": 1, "opsgenie-eu": 1, "jsm-ops": 3},
        "max_calls_per_second_by_account": {"acme": 3, "beta": 2},
        "total": 5,
    }


# --- host-wide overrides ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "status"),
    [
        ("retired", 410),
        ("invalid_key", 401),
        ("server_error", 503),
        ("redirect", 302),
        ("html_404", 404),
        ("gateway_timeout", 408),
        ("empty_200", 200),
        ("captive_portal", 200),
    ],
)
def test_a_host_override_answers_for_every_key(
    fake: Callable[..., FakeOpsgenie], behaviour: str, status: int
) -> None:
    og = fake(
        {"good": KeyScenario(account="acme"), "flaky": KeyScenario("server_error", status=502)},
        hosts={"opsgenie": behaviour},
    )

    answers = [
        host_probe(og, "opsgenie", AUTHENTICATE, "good"),
        host_probe(og, "opsgenie", ALERTS, "flaky"),
        host_probe(og, "opsgenie", ALERTS, "nobody"),
        host_probe(og, "opsgenie", ALERTS, None),
    ]

    assert [answer.status for answer in answers] == [status] * 4
    assert [(c.key, c.account, c.host, c.status) for c in og.requests()] == [
        ("good", "acme", "opsgenie", status),
        ("flaky", "default", "opsgenie", status),
        ("nobody", "default", "opsgenie", status),
        ("", "unknown", "opsgenie", status),
    ]
    # The other hosts still answer per key.
    assert host_probe(og, "opsgenie-eu", ALERTS, "good").status == 200
    assert host_probe(og, "jsm-ops", ALERTS, "good").status == 200


def test_a_retired_host_answers_opsgenie_json(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"good": KeyScenario()}, hosts={"jsm-ops": "retired"})

    for path in ENDPOINTS:  # even the authenticate JSM Ops never had
        answer = host_probe(og, "jsm-ops", path, "good")
        assert_error_answer(answer, 410, "This API is deprecated and no longer available")


def test_a_host_override_uses_none_of_the_keys_times_or_rate(
    fake: Callable[..., FakeOpsgenie],
) -> None:
    og = fake(
        {"k": KeyScenario("server_error", times=1, account="acme")},
        hosts={"opsgenie": "html_404"},
        account_rate_per_second=1,
    )

    assert [host_probe(og, "opsgenie", ALERTS, "k").status for _ in range(3)] == [404] * 3
    assert host_probe(og, "opsgenie-eu", ALERTS, "k").status == 503
    assert og.calls("k") == 4


def test_a_host_gone_dark_drops_the_connection_after_hanging(
    fake: Callable[..., FakeOpsgenie],
) -> None:
    og = fake({"good": KeyScenario()}, hosts={"opsgenie-eu": "hang"}, hang_seconds=0.2)

    started = time.monotonic()
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        host_probe(og, "opsgenie-eu", ALERTS, "good")

    assert time.monotonic() - started >= 0.2
    assert [(c.host, c.status) for c in og.requests()] == [("opsgenie-eu", None)]


def test_a_reset_host_drops_every_connection(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"good": KeyScenario()}, hosts={"opsgenie": "reset"})

    for path in ENDPOINTS:
        with pytest.raises((ConnectionError, urllib.error.URLError)):
            host_probe(og, "opsgenie", path, "good")
    assert host_probe(og, "opsgenie-eu", ALERTS, "good").status == 200


def test_a_host_retires_mid_run_through_the_admin_api(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake()
    scenario = {"keys": {"a": {"behaviour": "valid", "account": "acme"}}}
    assert http(og.url, "_fake/scenario", "PUT", scenario).status == 200
    assert host_probe(og, "opsgenie", ALERTS, "a").status == 200

    retired = {**scenario, "hosts": {"opsgenie": "retired"}}
    put = http(og.url, "_fake/scenario", "PUT", retired)

    assert put.json["hosts"] == {"opsgenie": "retired"}
    assert http(og.url, "_fake/scenario").json["hosts"] == {"opsgenie": "retired"}
    assert host_probe(og, "opsgenie", ALERTS, "a").status == 410
    assert host_probe(og, "opsgenie-eu", ALERTS, "a").status == 200
    # Replacing the scenario starts the call log afresh, as it always has.
    assert [(c.host, c.status) for c in og.requests()] == [("opsgenie", 410), ("opsgenie-eu", 200)]

    assert http(og.url, "_fake/scenario", "PUT", scenario).status == 200
    assert host_probe(og, "opsgenie", ALERTS, "a").status == 200


def test_set_host_keeps_the_call_log(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"k": KeyScenario("throttle", times=1)})
    assert host_probe(og, "opsgenie", ALERTS, "k").status == 429

    og.set_host("opsgenie", "captive_portal")
    assert host_probe(og, "opsgenie", ALERTS, "k").status == 200
    assert og.scenario.hosts == {"opsgenie": "captive_portal"}

    og.set_host("opsgenie", None)
    answer = host_probe(og, "opsgenie", ALERTS, "k")
    assert_success(answer, ALERTS)  # the key's one 429 was already spent
    assert [c.status for c in og.requests()] == [429, 200, 200]
    assert og.scenario.hosts == {}


def test_admin_api_sets_and_lifts_a_host_override(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"a": KeyScenario()})
    assert host_probe(og, "jsm-ops", ALERTS, "a").status == 200

    put = http(og.url, "_fake/hosts/jsm-ops", "PUT", {"behaviour": "gateway_timeout"})

    assert put.status == 200
    assert put.json == {"hosts": {"jsm-ops": "gateway_timeout"}}
    assert host_probe(og, "jsm-ops", ALERTS, "a").status == 408
    assert http(og.url, "_fake/hosts/jsm-ops", "PUT", {"behaviour": None}).json == {"hosts": {}}
    assert host_probe(og, "jsm-ops", ALERTS, "a").status == 200
    assert og.host_calls("jsm-ops") == 3


@pytest.mark.parametrize(
    ("host", "payload", "message"),
    [
        ("opsgenie-us", {"behaviour": "retired"}, "unknown host 'opsgenie-us'"),
        ("opsgenie", {"behaviour": "sunset"}, "behaviour must be one of"),
        ("opsgenie", {"behaviour": "eu_only"}, "'eu_only' describes a key, not a host"),
        ("opsgenie", "retired", 'the body must be {"behaviour"'),
        ("opsgenie", {"behaviour": "retired", "x": 1}, 'the body must be {"behaviour"'),
    ],
)
def test_admin_api_rejects_bad_host_overrides(
    fake: Callable[..., FakeOpsgenie], host: str, payload: Any, message: str
) -> None:
    og = fake({"a": KeyScenario()}, hosts={"jsm-ops": "retired"})

    answer = http(og.url, f"_fake/hosts/{host}", "PUT", payload)

    assert answer.status == 400
    assert message in answer.json["message"]
    assert og.scenario.hosts == {"jsm-ops": "retired"}


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ({"api.opsgenie.com": "retired"}, "hosts: unknown host 'api.opsgenie.com'"),
        ({"opsgenie": "gone"}, "hosts['opsgenie']: behaviour must be one of"),
        ({"opsgenie": "eu_only"}, "'eu_only' describes a key, not a host"),
        ({"jsm-ops": "jsm_only"}, "'jsm_only' describes a key, not a host"),
        ({"opsgenie": "throttle"}, "'throttle' describes a key, not a host"),
        ({"opsgenie": "valid"}, "'valid' describes a key, not a host"),
        (["opsgenie"], "hosts must map a host to a behaviour"),
    ],
)
def test_bad_host_overrides_are_refused(hosts: Any, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Scenario.from_json({"hosts": hosts})


def test_admin_api_refuses_a_scenario_with_a_bad_host(fake: Callable[..., FakeOpsgenie]) -> None:
    og = fake({"a": KeyScenario()})

    answer = http(og.url, "_fake/scenario", "PUT", {"hosts": {"opsgenie": "eu_only"}})

    assert answer.status == 400
    assert "'eu_only' describes a key, not a host" in answer.json["message"]
    assert og.scenario == Scenario(keys={"a": KeyScenario()})


# --- the documentation -----------------------------------------------------------------


def test_every_behaviour_and_host_is_documented() -> None:
    from typer.testing import CliRunner

    from worker.operations.cli import app

    result = CliRunner().invoke(app, ["fake-opsgenie", "--help"], env={"COLUMNS": "120"})

    assert result.exit_code == 0
    docstring = scenario_module.__doc__ or ""
    for name in [*BEHAVIOURS, *HOSTS, *HOST_PREFIXES.values(), '"hosts"']:
        assert name in result.output, name
        assert name.strip('"') in docstring, name
    assert set(HOST_BEHAVIOURS) < set(BEHAVIOURS)


# --- scenarios as JSON -----------------------------------------------------------------


def test_scenario_json_round_trip() -> None:
    scenario = Scenario(
        keys={
            "a": KeyScenario("throttle", account="acme", times=-1, period_seconds=60),
            "b": KeyScenario("server_error", status=502, latency_ms=20, times=2),
        },
        default=KeyScenario("no_access"),
        hosts={"opsgenie": "retired", "jsm-ops": "captive_portal"},
        latency_ms=5,
        hang_seconds=1.5,
        large_body_bytes=10,
        account_rate_per_second=7,
    )

    assert Scenario.from_json(scenario.to_json()) == scenario
    assert Scenario.from_json(json.loads(scenario.to_json())) == scenario


def test_scenario_json_defaults_and_short_form() -> None:
    scenario = Scenario.from_json('{"keys": {"a": "hang", "b": {}}}')

    assert scenario == Scenario(keys={"a": KeyScenario("hang"), "b": KeyScenario()})
    assert scenario.default == KeyScenario("invalid_key")
    assert scenario.hosts == {}
    assert (scenario.latency_ms, scenario.hang_seconds) == (0, 30.0)
    assert scenario.large_body_bytes == 8 * 1024 * 1024
    assert scenario.account_rate_per_second is None


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"keys": {"a": {"behaviour": "nope"}}}',
        '{"keys": {"a": {"colour": "red"}}}',
        '{"keys": {"a": {"times": "1"}}}',
        '{"keys": {"a": {"account": ""}}}',
        '{"latency_ms": -1}',
        '{"account_rate_per_second": 0}',
        '{"hang_seconds": true}',
    ],
)
def test_scenario_json_is_validated(text: str) -> None:
    with pytest.raises(ValueError):
        Scenario.from_json(text)


# --- lifecycle -------------------------------------------------------------------------


def test_url_has_a_trailing_slash_and_a_free_port() -> None:
    with FakeOpsgenie() as first, FakeOpsgenie() as second:
        assert first.url.startswith("http://127.0.0.1:")
        assert first.url.endswith("/")
        assert first.url != second.url


def test_stop_returns_quickly_with_a_hang_in_flight() -> None:
    og = FakeOpsgenie(Scenario(keys={"stuck": KeyScenario("hang")}, hang_seconds=30)).start()
    errors: list[BaseException] = []

    def stuck_call() -> None:
        try:
            probe(og.url, AUTHENTICATE, "stuck")
        except BaseException as exc:
            errors.append(exc)

    client = threading.Thread(target=stuck_call)
    client.start()
    while og.calls("stuck") == 0:
        time.sleep(0.01)

    started = time.monotonic()
    og.stop()

    assert time.monotonic() - started < 2.0
    client.join(timeout=5)
    assert not client.is_alive()
    assert len(errors) == 1


def test_serve_runs_until_sigterm(tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.json"
    scenario_file.write_text(Scenario(keys={"good": KeyScenario()}).to_json())
    code = (
        "import sys; from pathlib import Path; "
        "from worker.testing.fake_opsgenie import serve; "
        "from worker.testing.scenario import Scenario; "
        "serve('127.0.0.1', 0, Scenario.from_json(Path(sys.argv[1]).read_text()))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [sys.executable, "-c", code, str(scenario_file)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("fake-opsgenie listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1].strip()
        hosts = dict(process.stdout.readline().split() for _ in HOSTS)

        assert hosts == {host: url.rstrip("/") + prefix for host, prefix in HOST_PREFIXES.items()}
        assert probe(url, ALERTS, "good").status == 200
        assert probe(hosts["jsm-ops"], ALERTS, "good").status == 200

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0


def test_counters_only_keeps_the_stats_and_no_call(tmp_path: Path) -> None:
    """`ogv fake-opsgenie --counters-only` (the benchmarks' stand-in) answers as ever and
    counts its calls, keeping none of them."""
    scenario_file = tmp_path / "scenario.json"
    good = {"good": KeyScenario(account="acme"), "other": KeyScenario(account="umbrella")}
    scenario_file.write_text(Scenario(keys=good).to_json())
    ogv = Path(sys.executable).with_name("ogv")
    command = [str(ogv), "fake-opsgenie", "--port", "0", "--scenario", str(scenario_file)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen(
        [*command, "--counters-only"], stdout=subprocess.PIPE, text=True, env=env
    ) as process:
        assert process.stdout is not None
        url = process.stdout.readline().rsplit(" ", 1)[1].strip()
        for key in ("good", "good", "other"):
            assert probe(url, ALERTS, key).status == 200
        with urllib.request.urlopen(url + "_fake/stats", timeout=5) as answer:
            stats = json.load(answer)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    assert stats == {
        "calls_by_key": {},
        "calls_by_account": {"acme": 2, "umbrella": 1},
        "calls_by_host": {"opsgenie": 3},
        "max_calls_per_second_by_account": {"acme": 2, "umbrella": 1},
        "total": 3,
        "kept": "counters",
    }
