"""The Opsgenie client: one probe of one key, translated into our own terms.

It speaks to every platform of `worker.platforms` (Opsgenie US and EU, JSM
Operations): they share the header, the paths and the answer format. Answers
become a `Verdict` (the platform said something final about the key) or one of
these errors, raised with the aiohttp cause chained:

    OpsgenieError                  anything that is not a verdict
    ├── TransientError             retry later; never changes what we know of a key
    │   ├── Throttled              429: the account is out of tokens (retry_after)
    │   │   └── AccountPaused      not called: the account is still paused by a 429
    │   ├── ServerError            5xx other than 501
    │   ├── UnrecognisedAnswer     not the platform's own answer (SPEC §6): a redirect,
    │   │                          an HTML or empty body, 404/410 on the probe's path, 408
    │   ├── NetworkError           timeout, refused or reset connection, DNS failure
    │   └── GateUnavailable        the account pacing store (Redis) failed: not called

    BaseUrlError (a ValueError from worker.platforms.baseurl, not an OpsgenieError)
                                   the base URL is not an allowed Opsgenie host

No message here ever contains the key: it travels only in the Authorization header.
"""

from __future__ import annotations

import functools
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from models.base import Outcome
from worker.platforms import Platform, ProbeName
from worker.platforms.base import json_object
from worker.platforms.baseurl import BaseUrlError, check_allowed
from worker.platforms.throttle_headers import throttle_wait

__all__ = [
    "PROBES",
    "AccountPaused",
    "BaseUrlError",
    "GateUnavailable",
    "NetworkError",
    "OpsgenieClient",
    "OpsgenieError",
    "Probe",
    "ServerError",
    "Throttled",
    "TransientError",
    "UnrecognisedAnswer",
    "Verdict",
]


class OpsgenieError(Exception):
    """Base class of every failure to get a verdict from Opsgenie."""

    code = "opsgenie_error"
    http_status: int | None = None


class TransientError(OpsgenieError):
    """Raised when Opsgenie could not answer now; the same call may succeed later."""


class Throttled(TransientError):
    """Raised on 429: the account's rate limit is spent for `retry_after` seconds."""

    code = "throttled"
    http_status: int | None = 429

    def __init__(
        self,
        message: str,
        retry_after: float | None,
        state: str | None = None,
        reason: str | None = None,
        problem: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        """None: the headers named no usable wait, and the backoff decides."""
        self.problem = problem
        """Why no wait was usable (`worker.platforms.throttle_headers.PROBLEMS`), if so."""
        self.state = state
        """`X-RateLimit-State` as Opsgenie sent it (`THROTTLED`), if it did."""
        self.reason = reason
        """`X-RateLimit-Reason` (`ACCOUNT`, `INTEGRATION`...), if Opsgenie sent it."""


class AccountPaused(Throttled):
    """Raised instead of calling an account that a recent 429 paused; costs no attempt."""

    code = "account_paused"
    http_status = None


class ServerError(TransientError):
    """Raised on a 5xx answer other than 501 Not Implemented."""

    code = "server_error"

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class UnrecognisedAnswer(TransientError):
    """Raised when the answer is not recognisably the platform's: it is no verdict."""

    code = "unrecognised_answer"

    def __init__(self, message: str, http_status: int) -> None:
        super().__init__(message)
        self.http_status = http_status


class NetworkError(TransientError):
    """Raised when no HTTP answer arrived: timeout, refused or reset connection, DNS."""

    code = "network_error"

    def __init__(self, message: str, code: str = "network_error") -> None:
        super().__init__(message)
        self.code = code


class GateUnavailable(TransientError):
    """Raised when the account pacing store failed, so Opsgenie was not called."""

    code = "gate_unavailable"


@dataclass(frozen=True)
class Verdict:
    """Opsgenie's final answer about a key (SPEC §5): never retried."""

    outcome: Outcome
    http_status: int
    message: str | None = None
    opsgenie_code: str | None = None
    request_id: str | None = None
    reason: str | None = None
    """Our own code for a verdict that needs one (`malformed_key`)."""


MALFORMED_KEY_MESSAGE = "Key format is not valid!"
"""Opsgenie's 422 message for a key that can never work anywhere."""


@dataclass(frozen=True)
class Probe:
    """One read-only Opsgenie call that tells whether a key works (SPEC §4)."""

    name: ProbeName
    method: str
    path: str
    json_body: Mapping[str, Any] | None = None
    params: Mapping[str, str] | None = None

    @functools.cached_property
    def body(self) -> bytes | None:
        """The encoded JSON body: the same for every key, so encoded once."""
        return json.dumps(self.json_body).encode() if self.json_body is not None else None

    @functools.cached_property
    def headers(self) -> dict[str, str]:
        if self.json_body is None:
            return {"Accept": "application/json"}
        return {"Accept": "application/json", "Content-Type": "application/json"}


PROBES: dict[ProbeName, Probe] = {
    "authenticate": Probe(
        "authenticate", "POST", "v2/integrations/authenticate", json_body={"type": "sentry"}
    ),
    "alerts": Probe("alerts", "GET", "v2/alerts", params={"limit": "1"}),
}


class OpsgenieClient:
    """Asks Opsgenie whether a key works, on a session owned by the caller.

    The session is injected so that a worker process shares one connection pool
    across all its checks, and tests can point it anywhere.
    """

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        allowed_base_urls: Iterable[str],
        timeout: aiohttp.ClientTimeout | None = None,
        max_response_bytes: int = 64 * 1024,
        on_answer: Callable[[str, str, int | None, float], None] = lambda *answer: None,
    ) -> None:
        """`on_answer(platform, probe, status, seconds)` is told of every call: the HTTP
        status (None when no answer came) and the seconds until the response headers
        or the failure."""
        self._session = session
        self._allowed = frozenset(allowed_base_urls)
        self._urls: dict[tuple[str, ProbeName], str] = {}  # the probe's URL, once allowed
        self._timeout = timeout or aiohttp.ClientTimeout(total=10, connect=3)
        self._max_bytes = max_response_bytes
        self._on_answer = on_answer

    def _url_for(self, base_url: str, probe: Probe) -> str:
        url = self._urls.get((base_url, probe.name))
        if url is None:
            url = check_allowed(base_url, self._allowed) + probe.path
            self._urls[(base_url, probe.name)] = url
        return url

    async def check_key(
        self, base_url: str, key: str, *, platform: Platform, probe: ProbeName
    ) -> Verdict:
        """Probe `key` against the account at `base_url`; raise on anything not final."""
        call = PROBES[probe]
        url = self._url_for(base_url, call)
        headers = {**call.headers, "Authorization": f"GenieKey {key}"}
        headers["X-Request-ID"] = str(uuid.uuid4())
        started, answered = time.monotonic(), False
        try:
            async with self._session.request(
                call.method,
                url,
                data=call.body,
                params=call.params,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                answered = True
                self._on_answer(platform.name, probe, response.status, time.monotonic() - started)
                body = await _read_capped(response.content, self._max_bytes)
                return classify(response.status, response.headers, body, platform, probe, key)
        except TimeoutError as exc:
            raise NetworkError(f"{platform.title} did not answer in time", "timeout") from exc
        except aiohttp.ClientConnectorDNSError as exc:
            raise NetworkError(
                f"the {platform.title} host name did not resolve", "dns_error"
            ) from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(
                f"the connection to {platform.title} failed ({type(exc).__name__})",
                "connection_error",
            ) from exc
        finally:
            if not answered:
                self._on_answer(platform.name, probe, None, time.monotonic() - started)


async def _read_capped(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes. One `read(limit)` returns only what has arrived
    so far, which would cut an error body that comes in several packets."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def classify(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    platform: Platform,
    probe: ProbeName,
    key: str = "",
) -> Verdict:
    """Map one answer onto a verdict, or raise a TransientError (SPEC §5 and §6).

    Only an answer `platform` recognises as its own is a verdict; 429 and 5xx are
    retried whoever sent them. Every text kept from the answer is `scrub`bed of
    `key` (an upstream may echo it), of control characters, and bounded.
    """
    if status == 429:
        wait = throttle_wait(headers)
        raise Throttled(
            f"{platform.title} throttled the account",
            wait.seconds,
            _header_text(headers, "X-RateLimit-State", key),
            _header_text(headers, "X-RateLimit-Reason", key),
            wait.problem,
        )
    if status >= 500 and status != 501:
        raise ServerError(f"{platform.title} answered HTTP {status}", status)
    parsed = json_object(body)
    if not platform.recognises(probe, status, parsed):
        raise UnrecognisedAnswer(
            f"the answer (HTTP {status}, {_describe(headers, body)}) is not one "
            f"{platform.title} gives",
            status,
        )
    request_id = _header_text(headers, "X-Request-ID", key, 64)
    if 200 <= status < 300:  # the usual answer: only its request id is kept
        if request_id is None and isinstance(body_id := (parsed or {}).get("requestId"), str):
            request_id = scrub(body_id, key, 64) or None
        return Verdict(Outcome.VALID, status, request_id=request_id)
    details = _error_details(parsed or {}, key)
    request_id = request_id or details.get("requestId")
    message = details.get("message")
    code = details.get("code")
    if status == 422 and message == MALFORMED_KEY_MESSAGE:
        return Verdict(Outcome.INVALID_KEY, status, message, code, request_id, "malformed_key")
    outcome = {401: Outcome.INVALID_KEY, 403: Outcome.KEY_LACKS_ACCESS}.get(
        status, Outcome.REJECTED
    )
    return Verdict(outcome, status, message, code, request_id)


def _describe(headers: Mapping[str, str], body: bytes) -> str:
    """A few words on what came instead of the platform's JSON, for the message."""
    if not body.strip():
        return "an empty body"
    kind = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml") or body.lstrip()[:1] == b"<":
        return "an HTML page"
    return "a body of another shape"


def _header_text(headers: Mapping[str, str], name: str, key: str, limit: int = 32) -> str | None:
    """A header value fit to record (`scrub`bed, at most `limit` characters), or None."""
    value = headers.get(name)
    return scrub(value, key, limit) or None if value is not None else None


_ERROR_FIELDS: dict[str, tuple[type | tuple[type, ...], int]] = {
    "message": (str, 500),
    "code": ((str, int), 32),
    "requestId": (str, 64),
}
"""The fields of an Opsgenie error body we keep, with their types and longest length:
anything else is dropped, so a number where text belongs never reaches a Verdict's
`str` fields, and nothing longer than its column reaches the database."""


def _error_details(parsed: Mapping[str, Any], key: str) -> dict[str, str]:
    return {
        name: scrub(str(value), key, limit)
        for name, (kind, limit) in _ERROR_FIELDS.items()
        if isinstance(value := parsed.get(name), kind) and not isinstance(value, bool)
    }


REDACTED = "[redacted]"
KEY_FRAGMENT = 8
"""The shortest piece of a key that is redacted: shorter pieces match too much text."""


def scrub(text: str, key: str, limit: int) -> str:
    """`text` from upstream made fit to store and log.

    Any piece of `key` of `KEY_FRAGMENT` characters or more is redacted, in any
    case; control characters (a newline would forge a log line) are dropped; the
    result is at most `limit` characters, cut after redacting so that a cut never
    leaves a piece of the key behind.
    """
    printable = "".join(ch for ch in text if ch.isprintable())
    return _redact_key(printable, key)[:limit].strip()


def _redact_key(text: str, key: str) -> str:
    if len(key) < KEY_FRAGMENT:
        return text.replace(key, REDACTED) if key else text
    # Keys are ASCII (`inventory.check_key_format`): folding ASCII letters alone finds
    # an echo in any case and keeps every position of `text`.
    folded = (
        text.lower()
        if text.isascii()
        else "".join(ch.lower() if ch.isascii() else ch for ch in text)
    )
    folded_key = key.lower()
    pieces = {folded_key[i : i + KEY_FRAGMENT] for i in range(len(folded_key) - KEY_FRAGMENT + 1)}
    if not any(piece in folded for piece in pieces):
        return text  # the usual case, found by C-speed searches: nothing to hide
    covered = [False] * len(text)
    for start in range(len(folded) - KEY_FRAGMENT + 1):
        if folded[start : start + KEY_FRAGMENT] in pieces:
            covered[start : start + KEY_FRAGMENT] = [True] * KEY_FRAGMENT
    out, inside = [], False
    for ch, hidden in zip(text, covered, strict=True):
        if hidden and not inside:
            out.append(REDACTED)
        elif not hidden:
            out.append(ch)
        inside = hidden
    return "".join(out)
