"""A stand-in for Opsgenie that answers with the hostile-input audit's bodies (issue 14).

A real aiohttp server on a loopback port, on an event loop in a thread of its own.
Each key is given one kind of answer (`KINDS`); every call with that key gets it,
on both probes. The answers are what the audit sent: a `code` of 200 characters,
binary garbage, JSON nested past the parser's recursion limit, an object where
text belongs, the key echoed in upper case, in parts and in `code`, control
characters in `code` and `message`. Each kind says what the service must make of
it (`Expected`): the outcome, the error code, and the team's status afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from worker.checks.opsgenie import REDACTED

KEY_FRAGMENT = 12
"""The shortest piece of a key searched for in what the service stored, logged or
showed. The service redacts pieces of 8 and more; the stand-in echoes pieces of 12
and more, and a 12-character piece of a random key does not turn up by chance."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class Expected:
    """What a check answered by one kind ends with."""

    outcome: str
    error_code: str | None
    status: str
    """The team's status afterwards: a verdict, or `unknown` (kept) for a non-answer."""


def _json(status: int, body: object, key: str) -> Answer:
    # The key in X-Request-ID as well: the service keeps that header (scrubbed) too.
    return Answer(
        status,
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "X-Request-ID": key.upper()},
    )


def _error(status: int, key: str, **fields: object) -> Answer:
    return _json(status, {"took": 0.002, "requestId": "req-1", **fields}, key)


def long_code(key: str) -> Answer:
    return _error(400, key, message="Request rejected", code="E" * 200)


def binary(key: str) -> Answer:
    garbage = bytes(random.Random(key).randrange(256) for _ in range(2048))
    return Answer(401, b"\x00\xff" + garbage, {"Content-Type": "application/json"})


def deep(key: str) -> Answer:
    # 20,000 levels: json.loads raises RecursionError (not ValueError) past ~1,000.
    nested = "[" * 20_000 + "]" * 20_000
    body = f'{{"message": {nested}, "took": 0.1}}'.encode()
    return Answer(403, body, {"Content-Type": "application/json"})


def nested(key: str) -> Answer:
    message: object = key
    for _ in range(200):
        message = {"message": message}
    return _error(422, key, message=message)


def echo_upper(key: str) -> Answer:
    return _error(422, key, message=f"Key {key.upper()} is not allowed", code=key.upper())


def echo_parts(key: str) -> Answer:
    half = len(key) // 2
    return _error(
        400,
        key,
        message=f"first part {key[:half]} then {key[half:].upper()} again",
        code=key[2 : 2 + KEY_FRAGMENT + 6],
    )


def echo_code(key: str) -> Answer:
    return _error(401, key, message="Key not found", code=f"bad\n{key}")


def newline_code(key: str) -> Answer:
    return _error(
        403,
        key,
        message="No access\r\n2026-01-01 ERROR forged line",
        code="40301\nlevel=ERROR event=forged",
    )


def control_message(key: str) -> Answer:
    return _error(400, key, message="bad\x00value\x1b[31m\u2028end\ud800")


def throttled(key: str) -> Answer:
    # Retried at once (a period of 0), so attempts run out in a test's time.
    return Answer(
        429,
        b'{"message": "Too many requests", "took": 0.0}',
        {
            "Content-Type": "application/json",
            "X-RateLimit-State": key.upper() + "S" * 100,
            "X-RateLimit-Reason": f"ACCOUNT {key}",
            "X-RateLimit-Period-In-Sec": "0",
        },
    )


THROTTLED = (throttled, Expected("error", "throttled", "unknown"))
"""A 429 whose rate-limit headers echo the key at length: kept apart from `KINDS`, the
audit's 4xx answers, since every 429 pauses its account."""

KINDS: dict[str, tuple[Callable[[str], Answer], Expected]] = {
    "long_code": (long_code, Expected("rejected", "opsgenie_" + "E" * 32, "rejected")),
    "binary": (binary, Expected("error", "unrecognised_answer", "unknown")),
    # Nested past the parser's limit: RecursionError in json.loads, taken as no answer.
    "deep": (deep, Expected("error", "unrecognised_answer", "unknown")),
    "nested": (nested, Expected("error", "unrecognised_answer", "unknown")),
    "echo_upper": (echo_upper, Expected("rejected", f"opsgenie_{REDACTED}", "rejected")),
    "echo_parts": (echo_parts, Expected("rejected", f"opsgenie_{REDACTED}", "rejected")),
    "echo_code": (echo_code, Expected("invalid_key", f"opsgenie_bad{REDACTED}", "invalid_key")),
    "newline_code": (
        newline_code,
        Expected("key_lacks_access", "opsgenie_40301level=ERROR event=forged", "key_lacks_access"),
    ),
    "control_message": (control_message, Expected("rejected", None, "rejected")),
}
"""Kind → how the stand-in answers a key of that kind, and what the check must end with."""


class HostileUpstream:
    """The stand-in, serving `KINDS` by key; `with HostileUpstream() as server:`."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        """Key → its kind of answer. Unknown keys get 401 `invalid_key` from Opsgenie."""
        self.calls: Counter[str] = Counter()
        """Kind → calls answered."""
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _answer(self, request: web.Request) -> web.Response:
        key = request.headers.get("Authorization", "").removeprefix("GenieKey ")
        kind = self.kinds.get(key)
        if kind is None:
            return web.json_response({"message": "Key not found", "took": 0.0}, status=401)
        self.calls[kind] += 1
        answer = (THROTTLED if kind == "throttled" else KINDS[kind])[0](key)
        return web.Response(status=answer.status, body=answer.body, headers=answer.headers)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}/"

    def __enter__(self) -> HostileUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def fragments(key: str, size: int = KEY_FRAGMENT) -> set[str]:
    """Every piece of `key` of `size` characters, lower-cased."""
    folded = key.lower()
    return {folded[i : i + size] for i in range(len(folded) - size + 1)}


def leaks(text: str, pieces: set[str], size: int = KEY_FRAGMENT) -> set[str]:
    """The pieces (of `fragments`) that appear in `text`, in any case."""
    folded = text.lower()
    return {folded[i : i + size] for i in range(len(folded) - size + 1)} & pieces
