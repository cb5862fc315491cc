"""The Opsgenie client against a real fake Opsgenie over HTTP, and `classify` directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from models.base import Outcome
from worker.checks import opsgenie
from worker.checks.opsgenie import (
    BaseUrlError,
    NetworkError,
    OpsgenieClient,
    OpsgenieError,
    ServerError,
    Throttled,
    TransientError,
    UnrecognisedAnswer,
    Verdict,
)
from worker.platforms import OPSGENIE, Platform, ProbeName
from worker.settings import OFFICIAL_BASE_URLS
from worker.testing.fake_opsgenie import FakeOpsgenie, RecordedCall
from worker.testing.scenario import KeyScenario, Scenario

NO_CONFIG_MESSAGE = "Integration is not allowed to use configuration API; enable its access."


def new_key(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex}"


async def _check(
    base_url: str,
    key: str,
    *,
    probe: ProbeName = "authenticate",
    platform: Platform = OPSGENIE,
    allowed: Iterable[str] | None = None,
    client_timeout: aiohttp.ClientTimeout | None = None,
    max_response_bytes: int = 64 * 1024,
) -> Verdict:
    async with aiohttp.ClientSession() as session:
        client = OpsgenieClient(
            session,
            allowed_base_urls=[base_url] if allowed is None else allowed,
            timeout=client_timeout,
            max_response_bytes=max_response_bytes,
        )
        return await client.check_key(base_url, key, platform=platform, probe=probe)


def check(base_url: str, key: str, **options: Any) -> Verdict:
    """One probe on a fresh session and event loop."""
    return asyncio.run(_check(base_url, key, **options))


def check_error(base_url: str, key: str, **options: Any) -> OpsgenieError | BaseUrlError:
    """One probe that must fail; the error must not give the key away."""
    with pytest.raises((OpsgenieError, BaseUrlError)) as caught:
        check(base_url, key, **options)
    error = caught.value
    assert isinstance(error, OpsgenieError | BaseUrlError)
    assert_no_key(error, key)
    return error


def assert_no_key(error: BaseException, key: str) -> None:
    seen: BaseException | None = error
    while seen is not None:
        assert key not in str(seen)
        assert key not in repr(seen)
        assert key not in repr(seen.args)
        seen = seen.__cause__ or seen.__context__


def assert_request_id(verdict: Verdict) -> str:
    assert verdict.request_id is not None
    uuid.UUID(verdict.request_id)
    return verdict.request_id


def calls_for(fake: FakeOpsgenie, key: str) -> list[RecordedCall]:
    return [call for call in fake.requests() if call.key == key]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def tiny_server(handler: Handler) -> AsyncIterator[tuple[str, list[web.Request]]]:
    """A one-route aiohttp server on the caller's loop; yields its URL and the requests."""
    seen: list[web.Request] = []

    async def record(request: web.Request) -> web.StreamResponse:
        await request.read()
        seen.append(request)
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/", seen
    finally:
        await runner.cleanup()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the two probes, as sent -----------------------------------------------------------


def test_authenticate_probe_is_sent_as_the_reference_flow(fake: FakeOpsgenie) -> None:
    key = new_key("good")
    fake.set_key(key, KeyScenario(account="acme"))

    verdict = check(fake.url, key)

    assert verdict == Verdict(Outcome.VALID, 200, request_id=assert_request_id(verdict))
    [call] = calls_for(fake, key)
    assert call == RecordedCall(
        key=key,
        account="acme",
        method="POST",
        path="/v2/integrations/authenticate",
        query={},
        body={"type": "sentry"},
        headers={"Accept": "application/json", "Content-Type": "application/json"},
        at=call.at,
        status=200,
    )


def test_alerts_probe_reads_one_alert(fake: FakeOpsgenie) -> None:
    key = new_key("good")
    fake.set_key(key, KeyScenario(account="acme"))

    verdict = check(fake.url, key, probe="alerts")

    assert verdict == Verdict(Outcome.VALID, 200, request_id=assert_request_id(verdict))
    [call] = calls_for(fake, key)
    assert call == RecordedCall(
        key=key,
        account="acme",
        method="GET",
        path="/v2/alerts",
        query={"limit": "1"},
        body=None,
        headers={"Accept": "application/json"},
        at=call.at,
        status=200,
    )


@pytest.mark.parametrize(
    ("probe", "method", "path", "body"),
    [
        ("authenticate", "POST", "/v2/integrations/authenticate", b'{"type": "sentry"}'),
        ("alerts", "GET", "/v2/alerts?limit=1", b""),
    ],
)
def test_the_key_travels_only_in_the_genie_key_header(
    probe: ProbeName, method: str, path: str, body: bytes
) -> None:
    key = new_key("exact")

    async def ok(request: web.Request) -> web.Response:
        success = {"result": "ok"} if probe == "authenticate" else {"data": []}
        return web.json_response({**success, "took": 0.0, "requestId": "r-1"})

    async def main() -> tuple[Verdict, list[web.Request], bytes]:
        async with tiny_server(ok) as (url, seen):
            verdict = await _check(url, key, probe=probe)
            return verdict, seen, await seen[0].read()

    verdict, seen, sent_body = asyncio.run(main())

    assert verdict == Verdict(Outcome.VALID, 200, request_id="r-1")
    [request] = seen
    assert (request.method, request.path_qs, sent_body) == (method, path, body)
    assert request.headers["Authorization"] == f"GenieKey {key}"
    assert request.headers["Accept"] == "application/json"
    uuid.UUID(request.headers["X-Request-ID"])
    assert key not in request.path_qs
    assert key.encode() not in sent_body


# --- answers and verdicts --------------------------------------------------------------


@pytest.mark.parametrize("probe", ["authenticate", "alerts"])
@pytest.mark.parametrize(
    ("scenario", "outcome", "status", "message", "code"),
    [
        (
            KeyScenario("invalid_key"),
            Outcome.INVALID_KEY,
            401,
            "Integration key is not recognised.",
            None,
        ),
        (KeyScenario("no_access"), Outcome.KEY_LACKS_ACCESS, 403, NO_CONFIG_MESSAGE, "40301"),
        (
            KeyScenario("unprocessable"),
            Outcome.REJECTED,
            422,
            "Request could not be processed.",
            None,
        ),
        (
            KeyScenario("server_error", status=501),
            Outcome.REJECTED,
            501,
            "Service is temporarily unavailable.",
            None,
        ),
    ],
)
def test_final_answers_become_verdicts(
    fake: FakeOpsgenie,
    probe: ProbeName,
    scenario: KeyScenario,
    outcome: Outcome,
    status: int,
    message: str,
    code: str | None,
) -> None:
    key = new_key(scenario.behaviour)
    fake.set_key(key, scenario)

    verdict = check(fake.url, key, probe=probe)

    assert verdict == Verdict(outcome, status, message, code, assert_request_id(verdict))
    assert key not in repr(verdict)
    assert [call.status for call in calls_for(fake, key)] == [status]


def test_an_unknown_key_is_invalid(fake: FakeOpsgenie) -> None:
    key = new_key("never-configured")

    verdict = check(fake.url, key)

    assert verdict.outcome is Outcome.INVALID_KEY
    assert verdict.http_status == 401


def test_no_configuration_access_depends_on_the_probe(fake: FakeOpsgenie) -> None:
    key = new_key("api-made")
    fake.set_key(key, KeyScenario("no_config_access"))

    on_authenticate = check(fake.url, key, probe="authenticate")
    on_alerts = check(fake.url, key, probe="alerts")

    assert on_authenticate == Verdict(
        Outcome.KEY_LACKS_ACCESS,
        403,
        NO_CONFIG_MESSAGE,
        "40301",
        assert_request_id(on_authenticate),
    )
    assert on_alerts == Verdict(Outcome.VALID, 200, request_id=assert_request_id(on_alerts))


def test_throttle_carries_the_rate_limit_period(fake: FakeOpsgenie) -> None:
    key = new_key("busy")
    fake.set_key(key, KeyScenario("throttle", period_seconds=7))

    error = check_error(fake.url, key)

    assert isinstance(error, Throttled)
    assert isinstance(error, TransientError)
    assert (error.code, error.http_status, error.retry_after) == ("throttled", 429, 7.0)
    assert str(error) == "Opsgenie throttled the account"
    # The fake answers 200 once its one throttle is spent: nothing is cached client-side.
    assert check(fake.url, key).outcome is Outcome.VALID


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_transient(fake: FakeOpsgenie, status: int) -> None:
    key = new_key("flaky")
    fake.set_key(key, KeyScenario("server_error", status=status, times=-1))

    error = check_error(fake.url, key)

    assert type(error) is ServerError
    assert (error.code, error.http_status, str(error)) == (
        "server_error",
        status,
        f"Opsgenie answered HTTP {status}",
    )


# --- no answer at all ------------------------------------------------------------------


def test_a_hang_is_a_timeout() -> None:
    key = new_key("stuck")
    scenario = Scenario(keys={key: KeyScenario("hang")}, hang_seconds=5.0)
    with FakeOpsgenie(scenario) as slow:
        error = check_error(slow.url, key, client_timeout=aiohttp.ClientTimeout(total=0.3))

        assert type(error) is NetworkError
        assert (error.code, str(error)) == ("timeout", "Opsgenie did not answer in time")
        assert isinstance(error.__cause__, TimeoutError)
        assert slow.calls(key) == 1


def test_a_reset_connection_is_a_connection_error(fake: FakeOpsgenie) -> None:
    key = new_key("rst")
    fake.set_key(key, KeyScenario("reset"))

    error = check_error(fake.url, key)

    assert type(error) is NetworkError
    assert error.code == "connection_error"
    assert str(error).startswith("the connection to Opsgenie failed (")
    assert isinstance(error.__cause__, aiohttp.ClientError)
    assert len(calls_for(fake, key)) == 1


def test_a_refused_connection_is_a_connection_error() -> None:
    key = new_key("nobody-home")
    url = f"http://127.0.0.1:{unused_port()}/"

    error = check_error(url, key, client_timeout=aiohttp.ClientTimeout(total=2))

    assert type(error) is NetworkError
    assert (error.code, str(error)) == (
        "connection_error",
        "the connection to Opsgenie failed (ClientConnectorError)",
    )
    assert isinstance(error.__cause__, aiohttp.ClientConnectorError)


def test_every_call_is_reported_with_its_status_or_as_a_failure(fake: FakeOpsgenie) -> None:
    good, revoked = new_key("good"), new_key("revoked")
    fake.set_key(good, KeyScenario(account="acme"))
    fake.set_key(revoked, KeyScenario("invalid_key", account="acme"))
    nobody = f"http://127.0.0.1:{unused_port()}/"
    answers: list[tuple[str, str, int | None, float]] = []

    async def main() -> None:
        async with aiohttp.ClientSession() as session:
            client = OpsgenieClient(
                session,
                allowed_base_urls=[fake.url, nobody],
                on_answer=lambda *answer: answers.append(answer),
            )
            options: dict[str, Any] = {"platform": OPSGENIE, "probe": "authenticate"}
            await client.check_key(fake.url, good, **options)
            await client.check_key(fake.url, revoked, **options)
            with pytest.raises(NetworkError):
                await client.check_key(nobody, good, **options)

    asyncio.run(main())

    assert [answer[:3] for answer in answers] == [
        ("opsgenie", "authenticate", 200),
        ("opsgenie", "authenticate", 401),
        ("opsgenie", "authenticate", None),
    ]
    assert all(0 <= answer[3] < 10 for answer in answers)


def test_a_host_that_does_not_resolve_is_a_dns_error() -> None:
    key = new_key("no-such-host")
    url = "http://ogv-test.invalid/"  # RFC 6761: .invalid never resolves

    error = check_error(url, key, client_timeout=aiohttp.ClientTimeout(total=3))

    assert type(error) is NetworkError
    assert (error.code, str(error)) == ("dns_error", "the Opsgenie host name did not resolve")
    assert isinstance(error.__cause__, aiohttp.ClientConnectorDNSError)


# --- what the client refuses to do -----------------------------------------------------


def test_redirects_are_not_followed(fake: FakeOpsgenie) -> None:
    key = new_key("redirected")
    fake.set_key(key, KeyScenario())

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(fake.url + request.path_qs.lstrip("/"))

    async def main() -> Verdict:
        async with tiny_server(redirect) as (url, _):
            return await _check(url, key, allowed=[url, fake.url])

    with pytest.raises(UnrecognisedAnswer) as caught:
        asyncio.run(main())

    assert caught.value.http_status == 302  # a redirect says nothing about the key
    assert calls_for(fake, key) == []


def test_a_large_body_is_read_only_up_to_the_limit() -> None:
    key = new_key("big")
    scenario = Scenario(keys={key: KeyScenario("large_body")}, large_body_bytes=5 * 1024 * 1024)
    with FakeOpsgenie(scenario) as big:
        error = check_error(big.url, key, max_response_bytes=16 * 1024)

    # Cut at the limit, the body is no longer Opsgenie's JSON: no verdict, and no hang.
    assert (type(error), error.http_status) == (UnrecognisedAnswer, 200)


def test_an_endless_body_does_not_keep_the_client_reading() -> None:
    key = new_key("endless")

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200, headers={"X-Request-ID": "r-endless"})
        await response.prepare(request)
        chunk = b"x" * 65536
        # Far more than any client should take: 1 GiB. The client hangs up after its limit.
        with contextlib.suppress(ConnectionResetError):
            for _ in range(16 * 1024):
                await response.write(chunk)
        return response

    async def main() -> Verdict:
        async with tiny_server(endless) as (url, _):
            return await _check(
                url, key, client_timeout=aiohttp.ClientTimeout(total=3), max_response_bytes=4096
            )

    with pytest.raises(UnrecognisedAnswer) as caught:
        asyncio.run(main())
    assert caught.value.http_status == 200


def test_a_body_arriving_in_pieces_is_read_whole() -> None:
    """The error message survives a body that reaches the client in several packets."""
    key = new_key("pieces")

    async def in_pieces(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=422, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"message": "Request could')
        await asyncio.sleep(0.05)
        await response.write(b' not be processed.", "took": 0.01, "requestId": "r-2"}')
        return response

    async def main() -> Verdict:
        async with tiny_server(in_pieces) as (url, _):
            return await _check(url, key)

    assert asyncio.run(main()) == Verdict(
        Outcome.REJECTED, 422, "Request could not be processed.", None, "r-2"
    )


@pytest.mark.parametrize(
    "template",
    [
        "{url}",  # the fake itself, but only the official hosts are allowed
        "{url_userinfo}",
        "https://api.opsgenie.com.evil.test/",
        "ftp://api.opsgenie.com/",
    ],
)
def test_a_base_url_off_the_allowlist_is_refused_before_any_call(
    fake: FakeOpsgenie, template: str
) -> None:
    key = new_key("exfiltrate")
    fake.set_key(key, KeyScenario())
    before = len(fake.requests())
    url = template.format(url=fake.url, url_userinfo=fake.url.replace("://", "://u:p@"))

    error = check_error(url, key, allowed=OFFICIAL_BASE_URLS)

    assert type(error) is BaseUrlError
    assert not isinstance(error, TransientError)
    assert len(fake.requests()) == before


def test_a_refused_base_url_opens_no_connection() -> None:
    key = new_key("exfiltrate")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"

        error = check_error(url, key, allowed=OFFICIAL_BASE_URLS)

        assert str(error) == "the base URL is not one of the allowed API hosts"
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_the_allowlist_is_compared_after_normalisation(fake: FakeOpsgenie) -> None:
    key = new_key("spelled")
    fake.set_key(key, KeyScenario())
    spelled = fake.url.upper().rstrip("/")  # HTTP://127.0.0.1:<port>

    verdict = check(spelled, key, allowed=[fake.url])

    assert verdict.outcome is Outcome.VALID
    assert len(calls_for(fake, key)) == 1


# --- classify, without a network -------------------------------------------------------


def headers(**values: str) -> Mapping[str, str]:
    return CIMultiDict({name.replace("_", "-"): value for name, value in values.items()})


def classify(
    status: int, given: Mapping[str, str], body: bytes, probe: ProbeName = "authenticate"
) -> Verdict:
    """`classify` as the client calls it for an Opsgenie US integration."""
    return opsgenie.classify(status, given, body, OPSGENIE, probe)


AUTHENTICATED = b'{"result": "Integration authenticated", "took": 0.01, "requestId": "b"}'
ALERTS = b'{"data": [], "took": 0.01, "requestId": "b"}'


@pytest.mark.parametrize("status", [200, 201, 202])
def test_classify_2xx_with_the_probes_success_body_is_valid(status: int) -> None:
    assert classify(status, headers(X_Request_ID="r"), AUTHENTICATED) == Verdict(
        Outcome.VALID, status, request_id="r"
    )
    assert classify(status, headers(), ALERTS, "alerts") == Verdict(
        Outcome.VALID, status, request_id="b"
    )


@pytest.mark.parametrize(
    ("status", "body", "probe"),
    [
        (200, b"", "authenticate"),  # a captive portal's empty answer
        (200, b"<html><form>Sign in to the Wi-Fi</form></html>", "authenticate"),
        (200, b"not json at all", "alerts"),
        (200, ALERTS, "authenticate"),  # the other probe's success body
        (200, AUTHENTICATED, "alerts"),
        (204, b"", "authenticate"),
        (299, AUTHENTICATED, "authenticate"),
    ],
)
def test_classify_2xx_without_the_probes_body_is_no_verdict(
    status: int, body: bytes, probe: ProbeName
) -> None:
    with pytest.raises(UnrecognisedAnswer) as caught:
        classify(status, headers(), body, probe)

    assert (caught.value.code, caught.value.http_status) == ("unrecognised_answer", status)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (400, Outcome.REJECTED),
        (401, Outcome.INVALID_KEY),
        (402, Outcome.REJECTED),
        (403, Outcome.KEY_LACKS_ACCESS),
        (409, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (501, Outcome.REJECTED),
    ],
)
def test_classify_final_statuses_carry_opsgenie_details(status: int, outcome: Outcome) -> None:
    body = b'{"message": "Nope.", "took": 0.002, "requestId": "body-id", "code": 40301}'

    assert classify(status, headers(), body) == Verdict(
        outcome, status, "Nope.", "40301", "body-id"
    )
    assert classify(status, headers(X_Request_ID="hdr-id"), body).request_id == "hdr-id"


@pytest.mark.parametrize("status", [301, 302, 307, 404, 405, 408, 410, 418, 451])
def test_classify_statuses_opsgenie_never_gives_are_no_verdict_even_in_its_json(
    status: int,
) -> None:
    body = b'{"message": "Nope.", "took": 0.002, "requestId": "body-id"}'

    with pytest.raises(UnrecognisedAnswer) as caught:
        classify(status, headers(), body)

    assert caught.value.http_status == status
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html><body>Bad Gateway</body></html>",
        b"[1, 2, 3]",
        b'"just a string"',
        b"\xff\xfe\x00garbage",
        b'{"message": 5, "code": true, "requestId": ["x"]}',
        b'{"message": "cut off',
        b'{"message": "no took nor requestId"}',
        b'{"error": "not the shape", "took": 1}',
    ],
)
def test_classify_a_4xx_body_that_is_not_opsgenies_error_is_no_verdict(body: bytes) -> None:
    with pytest.raises(UnrecognisedAnswer):
        classify(401, headers(), body)


def test_classify_a_malformed_key_is_invalid_for_good() -> None:
    body = b'{"message": "Key format is not valid!", "took": 0.001, "requestId": "m"}'

    assert classify(422, headers(), body) == Verdict(
        Outcome.INVALID_KEY, 422, "Key format is not valid!", None, "m", "malformed_key"
    )


@pytest.mark.parametrize(
    ("given", "retry_after"),
    [
        ({"X-RateLimit-Period-In-Sec": "60"}, 60.0),
        ({"x-ratelimit-period-in-sec": "1"}, 1.0),
        ({"Retry-After": "12"}, 12.0),
        ({"X-RateLimit-Period-In-Sec": "5", "Retry-After": "30"}, 5.0),
        ({"X-RateLimit-Period-In-Sec": "soon", "Retry-After": "2.5"}, 2.5),
        ({"X-RateLimit-Period-In-Sec": "-1", "Retry-After": "3"}, 3.0),
        ({"X-RateLimit-Period-In-Sec": "0"}, 0.0),
        ({}, None),
        ({"X-RateLimit-Period-In-Sec": "soon"}, None),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date passed: now
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00"}, None),  # no zone: not RFC 9110
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "86400"}, None),
    ],
)
def test_classify_429_reads_the_wait_from_the_headers(
    given: dict[str, str], retry_after: float | None
) -> None:
    with pytest.raises(Throttled) as caught:
        classify(429, CIMultiDict(given), b'{"message": "Too many requests"}')

    assert caught.value.retry_after == retry_after
    assert caught.value.http_status == 429


def test_classify_429_honours_retry_after_as_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    with pytest.raises(Throttled) as caught:
        classify(429, headers(Retry_After=when), b"")

    assert caught.value.retry_after is not None
    assert 27 <= caught.value.retry_after <= 30


def test_classify_429_keeps_the_rate_limit_state_and_reason() -> None:
    given = headers(
        X_RateLimit_State="THROTTLED", X_RateLimit_Reason="ACCOUNT\r\nX-Evil: 1" + "x" * 50
    )

    with pytest.raises(Throttled) as caught:
        classify(429, given, b"")

    reason = ("ACCOUNTX-Evil: 1" + "x" * 50)[:32]  # printable only, and bounded
    assert (caught.value.state, caught.value.reason) == ("THROTTLED", reason)


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_classify_5xx_is_a_server_error(status: int) -> None:
    with pytest.raises(ServerError) as caught:
        classify(status, headers(), b"")

    assert caught.value.http_status == status


# --- what comes back is scrubbed ------------------------------------------------------

KEY = "3f6c1e2a-9b7d-4c1e-8f0a-5d2b7e9c4a10"


@pytest.mark.parametrize(
    "echo",
    [
        KEY,
        KEY.upper(),
        KEY[:8],  # the shortest piece that is redacted
        KEY[10:30],
        f"xx{KEY[5:20].upper()}yy{KEY[-9:]}",
    ],
)
def test_an_echo_of_the_key_is_redacted_from_every_field(echo: str) -> None:
    body = json.dumps(
        {"message": f"Key {echo} is unknown", "code": f"E-{echo}", "took": 0.1, "requestId": echo}
    ).encode()

    verdict = classify_with_key(401, headers(X_Request_ID=f"r-{echo}"), body)

    for text in (verdict.message, verdict.opsgenie_code, verdict.request_id):
        assert text is not None and "[redacted]" in text
        for start in range(len(KEY) - 7):
            assert KEY[start : start + 8].lower() not in text.lower()


def test_a_throttled_answer_is_scrubbed_too() -> None:
    given = headers(X_RateLimit_State=KEY, X_RateLimit_Reason=f"A{KEY[:12]}")

    with pytest.raises(Throttled) as caught:
        opsgenie.classify(429, given, b"", OPSGENIE, "authenticate", KEY)

    assert (caught.value.state, caught.value.reason) == ("[redacted]", "A[redacted]")


def test_a_short_piece_of_the_key_is_left_alone() -> None:
    body = json.dumps({"message": f"near {KEY[:7]} miss", "took": 0.1}).encode()

    assert classify_with_key(401, headers(), body).message == f"near {KEY[:7]} miss"


def test_upstream_text_is_bounded_and_has_no_control_characters() -> None:
    body = json.dumps(
        {"message": "line1\nforged=1\r\t" + "m" * 5000, "code": "C\n" + "9" * 200, "took": 1}
    ).encode()

    verdict = classify_with_key(400, headers(), body)

    assert verdict.message is not None and verdict.opsgenie_code is not None
    assert verdict.message.startswith("line1forged=1") and len(verdict.message) == 500
    assert verdict.opsgenie_code == "C" + "9" * 31
    assert all(ch.isprintable() for ch in verdict.message + verdict.opsgenie_code)


def classify_with_key(status: int, given: Mapping[str, str], body: bytes) -> Verdict:
    return opsgenie.classify(status, given, body, OPSGENIE, "authenticate", KEY)
