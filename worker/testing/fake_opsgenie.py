"""A fake Opsgenie: a real aiohttp HTTP server for tests, the demo and benchmarks.

It stands for three hosts at once, each under its own path prefix (:data:`HOST_PREFIXES`),
and answers the probes of the domain spec (sections 4 and 7) the way each host does:

- ``opsgenie`` (Opsgenie US) at ``/``: ``POST /v2/integrations/authenticate`` (the
  "authenticate" probe) and ``GET /v2/alerts?limit=1`` (the "alerts" probe);
- ``opsgenie-eu`` at ``/eu/``: the same two;
- ``jsm-ops`` (JSM Operations) at ``/jsm/ops/integration/``: the alerts probe only; its
  authenticate path answers 404, as JSM Ops has no such endpoint.

Probes read the key from ``Authorization: GenieKey <key>`` and answer according to the
host's override if the scenario has one, else that key's :class:`KeyScenario`. A request
without a well-formed header gets 401, and is counted under key ``""`` and account
``"unknown"``. Every probe is recorded as a :class:`RecordedCall`, naming its host.

Scenarios (which key and host answer what) are `worker.testing.scenario`'s.

An admin API lets other processes drive a running fake: ``GET``/``PUT /_fake/scenario``,
``PUT /_fake/keys/{key}``, ``PUT /_fake/hosts/{host}``, ``POST /_fake/reset`` and
``GET /_fake/stats``. :class:`FakeOpsgenie` runs the server on a background thread for
in-process use; :func:`serve` runs it in the foreground for ``ogv fake-opsgenie``.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import gc
import json
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import formatdate
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from worker.testing.scenario import (
    HOSTS,
    Behaviour,
    Host,
    KeyScenario,
    RateLimitHeaders,
    Scenario,
)

__all__ = [
    "HOST_PREFIXES",
    "FakeOpsgenie",
    "RecordedCall",
    "build_app",
    "serve",
]

# Where each host lives in the fake: its base URL is the fake's URL plus this prefix.
HOST_PREFIXES: dict[Host, str] = {
    "opsgenie": "/",
    "opsgenie-eu": "/eu/",
    "jsm-ops": "/jsm/ops/integration/",
}
assert tuple(HOST_PREFIXES) == HOSTS, "every host of the scenario has a prefix"

_Endpoint = Literal["authenticate", "alerts"]
ENDPOINT_PATHS: dict[_Endpoint, str] = {
    "authenticate": "v2/integrations/authenticate",
    "alerts": "v2/alerts",
}
# JSM Ops has no authenticate endpoint (spec section 7); the fake answers it 404.
ENDPOINTS_BY_HOST: dict[Host, tuple[_Endpoint, ...]] = {
    "opsgenie": ("authenticate", "alerts"),
    "opsgenie-eu": ("authenticate", "alerts"),
    "jsm-ops": ("alerts",),
}
UNKNOWN_ACCOUNT = "unknown"
LOGIN_URL = "https://id.atlassian.com/login"

# How long stop() lets in-flight requests (e.g. a "hang") finish before cancelling them.
SHUTDOWN_GRACE_SECONDS = 0.25
STATUS_BY_BEHAVIOUR: dict[str, int] = {
    "valid": 200,
    "invalid_key": 401,
    "no_access": 403,
    "unprocessable": 422,
    "malformed_key": 422,
    "retired": 410,
    "throttle": 429,
    "switched_off": 401,
    "hang": 200,
    "large_body": 200,
    "redirect": 302,
    "html_404": 404,
    "gateway_timeout": 408,
    "empty_200": 200,
    "captive_portal": 200,
}
HOST_SERVER_ERROR_STATUS = 503  # what a host-wide ``server_error`` answers
TOOK = 0.01
# Behaviours that stop failing after the key's `times` attempts.
_FAILS_THEN_ANSWERS = ("throttle", "server_error", "hang", "reset")


# --- shared state ----------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedCall:
    """One probe request as the fake received it."""

    key: str
    account: str
    method: str
    path: str
    query: dict[str, str]
    body: Any  # the decoded JSON body, or None
    headers: dict[str, str]  # Accept and Content-Type, when sent
    at: float  # time.monotonic() on arrival
    status: int | None  # the status answered; None for "reset"
    # The host the call was made to. Last and defaulted so that a US call can be
    # compared without naming it.
    host: Host = "opsgenie"


# What the fake may answer: a behaviour, or the 404 of an endpoint the host lacks.
_Answer = Behaviour | Literal["not_found"]


@dataclass(frozen=True)
class _Plan:
    """What to answer to one probe, decided when it arrives."""

    behaviour: _Answer
    status: int | None
    delay_seconds: float
    period_seconds: int = 1
    rate_limit_headers: RateLimitHeaders = "opsgenie"


def _status(behaviour: Behaviour, endpoint: _Endpoint, server_error_status: int) -> int | None:
    """The status ``behaviour`` answers (None: no answer); host-dependent ones resolved."""
    if behaviour == "reset":
        return None
    if behaviour == "server_error":
        return server_error_status
    if behaviour == "no_config_access":
        return 403 if endpoint == "authenticate" else 200
    return STATUS_BY_BEHAVIOUR[behaviour]


def _host_plan(behaviour: Behaviour, endpoint: _Endpoint, delay: float, hang: float) -> _Plan:
    """The answer of a host overridden by ``behaviour``, whatever the key."""
    if behaviour == "hang":
        # A host gone dark answers nothing; answering 200 afterwards, as a key's
        # "hang" does, would vouch for every key.
        return _Plan("reset", None, delay + hang)
    return _Plan(behaviour, _status(behaviour, endpoint, HOST_SERVER_ERROR_STATUS), delay)


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    """The most timestamps of sorted ``times`` that fit in any half-open window."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, bisect.bisect_left(times, start + window, lo=i) - i)
    return best


class _Counters:
    """What `stats` reports, counted as calls arrive instead of kept call by call: its
    size grows with the accounts and hosts, never with the calls (a benchmark's million
    calls would otherwise keep a million records)."""

    def __init__(self) -> None:
        self.total = 0
        self.by_account: Counter[str] = Counter()
        self.by_host: Counter[str] = Counter()
        self.recent: dict[str, deque[float]] = {}
        """Per account, the calls of the last second (for the busiest second)."""
        self.busiest: Counter[str] = Counter()

    def add(self, account: str, host: str, at: float) -> None:
        self.total += 1
        self.by_account[account] += 1
        self.by_host[host] += 1
        recent = self.recent.setdefault(account, deque())
        while recent and at - recent[0] >= 1.0:
            recent.popleft()
        recent.append(at)
        self.busiest[account] = max(self.busiest[account], len(recent))

    def stats(self) -> dict[str, Any]:
        return {
            "calls_by_key": {},
            "calls_by_account": dict(self.by_account),
            "calls_by_host": dict(self.by_host),
            "max_calls_per_second_by_account": dict(self.busiest),
            "total": self.total,
            "kept": "counters",
        }


class _State:
    """Scenario, counters and the call log; shared by the server and its controller.

    With `keep_calls` False (`ogv fake-opsgenie --counters-only`, for benchmarks) no
    call is kept: `stats` comes from `_Counters`, and the call log stays empty.
    """

    def __init__(self, scenario: Scenario, keep_calls: bool = True) -> None:
        self._lock = threading.Lock()
        self._scenario = scenario
        self._attempts: Counter[str] = Counter()
        self._admitted: dict[str, deque[float]] = {}
        self._calls: list[RecordedCall] = []
        self._counters = None if keep_calls else _Counters()

    @property
    def scenario(self) -> Scenario:
        with self._lock:
            return self._scenario

    def replace(self, scenario: Scenario) -> None:
        with self._lock:
            self._scenario = scenario
            self._clear()

    def set_key(self, key: str, key_scenario: KeyScenario) -> None:
        with self._lock:
            keys = {**self._scenario.keys, key: key_scenario}
            self._scenario = dataclasses.replace(self._scenario, keys=keys)
            self._attempts.pop(key, None)

    def reset(self) -> None:
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._attempts.clear()
        self._admitted.clear()
        self._calls.clear()
        if self._counters is not None:
            self._counters = _Counters()

    def calls(self) -> list[RecordedCall]:
        with self._lock:
            return list(self._calls)

    def set_host(self, host: str, behaviour: str | None) -> None:
        with self._lock:
            self._scenario = self._scenario.with_host(host, behaviour)

    def plan(
        self, key: str | None, host: Host, endpoint: _Endpoint, request: web.Request, body: Any
    ) -> _Plan:
        """Decide the answer to a probe and record the call."""
        with self._lock:
            now = time.monotonic()
            account = UNKNOWN_ACCOUNT if key is None else self._scenario.for_key(key).account
            plan = self._decide(key, host, endpoint, now)
            self._record(key or "", account, host, request, body, now, plan)
            return plan

    def _decide(self, key: str | None, host: Host, endpoint: _Endpoint, now: float) -> _Plan:
        """The answer, in the order a request meets them: host, endpoint, key."""
        scenario = self._scenario
        network_delay = scenario.latency_ms / 1000
        override = scenario.for_host(host)
        if override is not None:
            return _host_plan(override, endpoint, network_delay, scenario.hang_seconds)
        if endpoint not in ENDPOINTS_BY_HOST[host]:
            return _Plan("not_found", 404, network_delay)
        if key is None:
            return _Plan("invalid_key", 401, network_delay)
        return self._plan_for_key(key, scenario.for_key(key), now, host, endpoint)

    def _plan_for_key(
        self, key: str, key_scenario: KeyScenario, now: float, host: Host, endpoint: _Endpoint
    ) -> _Plan:
        scenario = self._scenario
        delay = (scenario.latency_ms + key_scenario.latency_ms) / 1000
        if not self._admit(key_scenario.account, now):
            return _Plan("throttle", 429, delay)
        behaviour = key_scenario.behaviour_on(host)
        if behaviour in _FAILS_THEN_ANSWERS:
            # Only a key that fails a number of times is counted: a fleet of valid keys
            # leaves no trace per key.
            self._attempts[key] += 1
            repeats = key_scenario.times
            if repeats is None:
                repeats = -1 if behaviour in ("hang", "reset") else 1
            if 0 <= repeats < self._attempts[key]:
                behaviour = "valid"
        if behaviour == "hang":
            delay += scenario.hang_seconds
        status = _status(behaviour, endpoint, key_scenario.status)
        return _Plan(
            behaviour, status, delay, key_scenario.period_seconds, key_scenario.rate_limit_headers
        )

    def _admit(self, account: str, now: float) -> bool:
        """Apply the optional per-account rate limit; True if the call may proceed."""
        limit = self._scenario.account_rate_per_second
        if limit is None:
            return True
        admitted = self._admitted.setdefault(account, deque())
        while admitted and now - admitted[0] >= 1.0:
            admitted.popleft()
        if len(admitted) >= limit:
            return False
        admitted.append(now)
        return True

    def _record(
        self,
        key: str,
        account: str,
        host: Host,
        request: web.Request,
        body: Any,
        now: float,
        plan: _Plan,
    ) -> None:
        if self._counters is not None:
            self._counters.add(account, host, now)
            return
        headers = {
            h: request.headers[h] for h in ("Accept", "Content-Type") if h in request.headers
        }
        call = RecordedCall(
            key=key,
            account=account,
            method=request.method,
            path=request.path,
            query=dict(request.query),
            body=body,
            headers=headers,
            at=now,
            status=plan.status,
            host=host,
        )
        self._calls.append(call)

    def stats(self) -> dict[str, Any]:
        if self._counters is not None:
            with self._lock:
                return self._counters.stats()
        calls = self.calls()
        by_account: dict[str, list[float]] = {}
        for call in calls:
            by_account.setdefault(call.account, []).append(call.at)
        return {
            "calls_by_key": dict(Counter(call.key for call in calls)),
            "calls_by_account": {a: len(times) for a, times in by_account.items()},
            "calls_by_host": dict(Counter(call.host for call in calls)),
            "max_calls_per_second_by_account": {
                a: _max_in_window(times) for a, times in by_account.items()
            },
            "total": len(calls),
        }


# --- HTTP: the probes ------------------------------------------------------------------

_STATE = web.AppKey("fake_opsgenie_state", _State)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _parse_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: GenieKey <key>`` header, or None if malformed."""
    scheme, _, key = (authorization or "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "geniekey" or not key or " " in key:
        return None
    return key


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _json_response(
    status: int, payload: dict[str, Any], headers: Mapping[str, str] | None = None
) -> web.Response:
    request_id = str(uuid.uuid4())
    body = {**payload, "took": TOOK, "requestId": request_id}
    all_headers = {"X-Request-ID": request_id, **(headers or {})}
    return web.json_response(body, status=status, headers=all_headers)


def _success(endpoint: _Endpoint) -> web.Response:
    if endpoint == "authenticate":
        return _json_response(200, {"result": "Integration authenticated"})
    return _json_response(200, {"data": [], "paging": {}})


def _large_body(size: int) -> web.Response:
    """A valid JSON success body padded to ``size`` bytes (or the smallest one possible)."""
    request_id = str(uuid.uuid4())
    head = b'{"data": "'
    tail = f'", "took": {TOOK}, "requestId": "{request_id}"}}'.encode()
    padding = b"x" * max(0, size - len(head) - len(tail))
    return web.Response(
        body=head + padding + tail,
        content_type="application/json",
        headers={"X-Request-ID": request_id},
    )


def _no_configuration_access() -> web.Response:
    message = "Integration is not allowed to use configuration API; enable its access."
    return _json_response(403, {"message": message, "code": 40301})


def _throttled(period_seconds: int, form: RateLimitHeaders = "opsgenie") -> web.Response:
    headers = {"X-RateLimit-State": "THROTTLED", "X-RateLimit-Reason": "ACCOUNT"}
    headers.update(_wait_headers(period_seconds, form))
    message = "Too many requests for this account; retry after the rate-limit period."
    return _json_response(429, {"message": message}, headers)


def _wait_headers(seconds: int, form: RateLimitHeaders) -> dict[str, str]:
    """The headers that name a 429's wait of `seconds` in one form (or a broken one)."""
    match form:
        case "opsgenie":
            return {"X-RateLimit-Period-In-Sec": str(seconds)}
        case "retry_after":
            return {"Retry-After": str(seconds)}
        case "retry_after_date":
            # Whole seconds: the next second boundary after `seconds` have passed.
            return {"Retry-After": formatdate(time.time() + seconds + 1, usegmt=True)}
        case "ratelimit":
            return {
                "RateLimit": f'"default";r=0;t={seconds}',
                "RateLimit-Policy": f'"default";q=10;w={max(seconds, 60)}',
            }
        case "ratelimit_policy":
            return {"RateLimit-Policy": f'"default";q=10;w={seconds}'}
        case "ratelimit_reset":
            return {
                "RateLimit-Limit": "10",
                "RateLimit-Remaining": "0",
                "RateLimit-Reset": str(seconds),
            }
        case "x_ratelimit_remaining":
            return {
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time()) + seconds + 1),
            }
        case "negative":
            return {"Retry-After": str(-seconds)}
        case "absurd":
            return {"Retry-After": "7200"}
        case "unparseable":
            return {"Retry-After": "soon", "RateLimit": "(nonsense"}
        case _:  # "none"
            return {}


def _error(status: int, message: str) -> Callable[[], web.Response]:
    """An Opsgenie error answer that depends on nothing but its status and message."""
    return lambda: _json_response(status, {"message": message})


# Pages of what stands between a client and Opsgenie (spec section 6), as seen in the wild.
NGINX_404_PAGE = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)
LOAD_BALANCER_408_PAGE = (
    "<html><body><h1>408 Request Time-out</h1>\n"
    "Your browser didn't send a complete request in time.\n</body></html>\n"
)
LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Log in to continue</title></head><body>"
    '<form method="post" action="/login"><input name="username">'
    '<input name="password" type="password"><button>Log in</button></form>'
    "</body></html>"
)
REDIRECT_PAGE = f'<html><body>You are being <a href="{LOGIN_URL}">redirected</a>.</body></html>'


def _html(status: int, page: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """An HTML answer without Opsgenie's X-Request-ID: it is not Opsgenie that answers."""
    return web.Response(status=status, text=page, content_type="text/html", headers=headers)


def _empty_200() -> web.Response:
    # Labelled JSON, as some proxies do, to catch a client that trusts the label.
    return web.Response(status=200, body=b"", content_type="application/json")


# The answers that depend on neither the endpoint nor the scenario.
_FIXED_ANSWERS: dict[str, Callable[[], web.Response]] = {
    "invalid_key": _error(401, "Integration key is not recognised."),
    "no_access": _no_configuration_access,
    "unprocessable": _error(422, "Request could not be processed."),
    "malformed_key": _error(422, "Key format is not valid!"),
    "retired": _error(410, "This API is deprecated and no longer available"),
    "not_found": _error(404, "Not Found"),
    "redirect": lambda: _html(302, REDIRECT_PAGE, {"Location": LOGIN_URL}),
    "html_404": lambda: _html(404, NGINX_404_PAGE, {"Server": "nginx"}),
    "gateway_timeout": lambda: _html(408, LOAD_BALANCER_408_PAGE),
    "empty_200": _empty_200,
    "captive_portal": lambda: _html(200, LOGIN_PAGE),
    "switched_off": _error(401, "Opsgenie has been turned off for this account."),
}


def _answer(plan: _Plan, endpoint: _Endpoint, large_body_bytes: int) -> web.Response:
    fixed = _FIXED_ANSWERS.get(plan.behaviour)
    if fixed is not None:
        return fixed()
    match plan.behaviour:
        case "valid" | "hang":
            return _success(endpoint)
        case "no_config_access":
            if endpoint == "authenticate":
                return _no_configuration_access()
            return _success(endpoint)
        case "large_body":
            return _large_body(large_body_bytes)
        case "throttle":
            return _throttled(plan.period_seconds, plan.rate_limit_headers)
        case _:
            status = plan.status or 500  # "reset" never gets here
            return _json_response(status, {"message": "Service is temporarily unavailable."})


def _abort_connection(request: web.Request) -> None:
    """Close the client's connection with a TCP RST and without any HTTP answer."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # Linger on, timeout 0: close() sends RST instead of an orderly FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def _probe(request: web.Request, host: Host, endpoint: _Endpoint) -> web.StreamResponse:
    state = request.app[_STATE]
    body = await _read_json(request)
    key = _parse_key(request.headers.get("Authorization"))
    plan = state.plan(key, host, endpoint, request, body)
    if plan.delay_seconds > 0:
        await asyncio.sleep(plan.delay_seconds)
    if plan.behaviour == "reset":
        _abort_connection(request)
        # Never sent: aiohttp sees the closed transport and drops this quietly.
        return web.Response(status=204)
    return _answer(plan, endpoint, state.scenario.large_body_bytes)


def _probe_handler(host: Host, endpoint: _Endpoint) -> _Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await _probe(request, host, endpoint)

    return handle


def _add_probe_routes(app: web.Application) -> None:
    """Every probe on every host, even those a host lacks: their calls are recorded too."""
    for host, prefix in HOST_PREFIXES.items():
        for endpoint, path in ENDPOINT_PATHS.items():
            method = "POST" if endpoint == "authenticate" else "GET"
            app.router.add_route(method, prefix + path, _probe_handler(host, endpoint))


# --- HTTP: the admin API ---------------------------------------------------------------


async def _read_admin_json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise web.HTTPBadRequest(reason=f"body is not JSON: {exc}") from exc


async def _get_scenario(request: web.Request) -> web.Response:
    return web.json_response(request.app[_STATE].scenario.to_dict())


async def _put_scenario(request: web.Request) -> web.Response:
    data = await _read_admin_json(request)
    try:
        scenario = Scenario.from_json(data)
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from exc
    request.app[_STATE].replace(scenario)
    return web.json_response(scenario.to_dict())


async def _put_key(request: web.Request) -> web.Response:
    data = await _read_admin_json(request)
    try:
        key_scenario = KeyScenario.from_dict(data)
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from exc
    request.app[_STATE].set_key(request.match_info["key"], key_scenario)
    return web.json_response(key_scenario.to_dict())


async def _put_host(request: web.Request) -> web.Response:
    """``{"behaviour": "retired"}`` overrides the host; ``{"behaviour": null}`` lifts it."""
    data = await _read_admin_json(request)
    if not isinstance(data, dict) or set(data) != {"behaviour"}:
        raise web.HTTPBadRequest(reason='the body must be {"behaviour": <behaviour or null>}')
    state = request.app[_STATE]
    try:
        state.set_host(request.match_info["host"], data["behaviour"])
    except (TypeError, ValueError) as exc:
        raise web.HTTPBadRequest(reason=str(exc)) from exc
    return web.json_response({"hosts": dict(state.scenario.hosts)})


async def _post_reset(request: web.Request) -> web.Response:
    request.app[_STATE].reset()
    return web.json_response({"reset": True})


async def _get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[_STATE].stats())


@web.middleware
async def _json_errors(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """Answer routing and admin errors as Opsgenie-style JSON too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _json_response(exc.status, {"message": exc.reason})


def _make_app(state: _State) -> web.Application:
    app = web.Application(middlewares=[_json_errors])
    app[_STATE] = state
    _add_probe_routes(app)
    app.router.add_get("/_fake/scenario", _get_scenario)
    app.router.add_put("/_fake/scenario", _put_scenario)
    app.router.add_put("/_fake/keys/{key}", _put_key)
    app.router.add_put("/_fake/hosts/{host}", _put_host)
    app.router.add_post("/_fake/reset", _post_reset)
    app.router.add_get("/_fake/stats", _get_stats)
    return app


def build_app(scenario: Scenario, keep_calls: bool = True) -> web.Application:
    """The fake's aiohttp application, serving ``scenario``; with ``keep_calls`` False it
    keeps counters only (see `_State`)."""
    return _make_app(_State(scenario, keep_calls))


# --- running it ------------------------------------------------------------------------


def _base_url(address: str, port: int, prefix: str = "/") -> str:
    return f"http://{address}:{port}{prefix}"


async def _start(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``app``; returns the runner and the port actually bound."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_SECONDS)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound_port: int = runner.addresses[0][1]
    return runner, bound_port


class FakeOpsgenie:
    """Runs the fake on its own event loop in a daemon thread; a context manager."""

    def __init__(
        self, scenario: Scenario | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._state = _State(scenario if scenario is not None else Scenario())
        self._host = host
        self._port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    @property
    def url(self) -> str:
        """The Opsgenie US base URL of the running fake, with a trailing slash."""
        return self.base_url_for("opsgenie")

    @property
    def base_url(self) -> str:
        """The Opsgenie US base URL of the running fake (the same as :attr:`url`)."""
        return self.base_url_for("opsgenie")

    def base_url_for(self, host: Host) -> str:
        """The base URL of ``host`` on the running fake, with a trailing slash."""
        if self._thread is None:
            raise RuntimeError("FakeOpsgenie is not started")
        return _base_url(self._host, self._port, HOST_PREFIXES[host])

    def base_urls(self) -> dict[Host, str]:
        """Every host's base URL on the running fake, by host."""
        return {host: self.base_url_for(host) for host in HOST_PREFIXES}

    def start(self) -> FakeOpsgenie:
        """Start serving; returns once the server is listening."""
        if self._thread is not None:
            raise RuntimeError("FakeOpsgenie is already started")
        self._ready.clear()
        thread = threading.Thread(target=self._run, name="fake-opsgenie", daemon=True)
        thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            thread.join()
            raise RuntimeError("FakeOpsgenie failed to start") from self._startup_error
        self._thread = thread
        return self

    def stop(self) -> None:
        """Stop serving; requests still in flight are cut off after a short grace period."""
        thread, loop, stopping = self._thread, self._loop, self._stopping
        if thread is None or loop is None or stopping is None:
            return
        loop.call_soon_threadsafe(stopping.set)
        thread.join()
        self._thread = None

    def __enter__(self) -> FakeOpsgenie:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        self._startup_error = None
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            runner, self._port = await _start(_make_app(self._state), self._host, self._port)
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    def set_scenario(self, scenario: Scenario) -> None:
        """Serve ``scenario`` from now on; resets every counter."""
        self._state.replace(scenario)

    def set_key(self, key: str, scenario: KeyScenario) -> None:
        """Add or replace one key's scenario; resets that key's attempt counter."""
        self._state.set_key(key, scenario)

    def set_host(self, host: Host, behaviour: Behaviour | None) -> None:
        """Make every call to ``host`` answer ``behaviour`` from now on (None: lift it).

        Unlike :meth:`set_scenario`, keeps every counter and the call log, so a test can
        retire a host in the middle of a run and still count the whole run's calls.
        """
        self._state.set_host(host, behaviour)

    def reset(self) -> None:
        """Forget every call and attempt."""
        self._state.reset()

    @property
    def scenario(self) -> Scenario:
        return self._state.scenario

    def calls(self, key: str) -> int:
        """Probe requests received with ``key`` (``""``: without a usable key)."""
        return sum(1 for call in self._state.calls() if call.key == key)

    def account_calls(self, account: str) -> int:
        """Probe requests received for any key of ``account``."""
        return sum(1 for call in self._state.calls() if call.account == account)

    def host_calls(self, host: Host) -> int:
        """Probe requests received by ``host``, whatever their key."""
        return sum(1 for call in self._state.calls() if call.host == host)

    def max_calls_per_second(self, account: str) -> int:
        """The most calls ``account`` received within any sliding 1-second window."""
        times = [call.at for call in self._state.calls() if call.account == account]
        return _max_in_window(times)

    def requests(self) -> list[RecordedCall]:
        """Every probe request received since the last reset, oldest first."""
        return self._state.calls()


async def _serve_until_signalled(
    host: str, port: int, scenario: Scenario, keep_calls: bool
) -> None:
    runner, bound_port = await _start(build_app(scenario, keep_calls), host, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    sys.stdout.write(f"fake-opsgenie listening on {_base_url(host, bound_port)}\n")
    for name, prefix in HOST_PREFIXES.items():
        sys.stdout.write(f"  {name:<12} {_base_url(host, bound_port, prefix)}\n")
    sys.stdout.flush()
    freezing = asyncio.create_task(_freeze_what_is_kept())
    try:
        await stopping.wait()
    finally:
        freezing.cancel()
        await runner.cleanup()


FREEZE_EVERY = 1.0  # seconds


async def _freeze_what_is_kept() -> None:
    """Keep the recorded calls out of the garbage collector's full collections.

    The server keeps every call it received. Left to the collector, each full
    collection walks all of them and stalls the event loop for as long (100 ms and
    more after 100,000 calls), and the calls that arrive during a stall are timed
    as if they had arrived together: the per-account counters would see bursts the
    callers never sent. Frozen objects are never collected; cycles that were
    garbage at a freeze stay in memory, which a test server can afford.
    """
    while True:
        await asyncio.sleep(FREEZE_EVERY)
        gc.freeze()


def serve(host: str, port: int, scenario: Scenario, keep_calls: bool = True) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (the ``ogv fake-opsgenie`` command)."""
    asyncio.run(_serve_until_signalled(host, port, scenario, keep_calls))
