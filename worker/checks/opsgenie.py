"""The Opsgenie client: one probe of one key, translated into our own terms.

Answers become a `Verdict` (Opsgenie said something final about the key) or one
of these errors, raised with the aiohttp cause chained:

    OpsgenieError                  anything that is not a verdict
    ├── TransientError             retry later; never changes what we know of a key
    │   ├── Throttled              429: the account is out of tokens (retry_after)
    │   │   └── AccountPaused      not called: the account is still paused by a 429
    │   ├── ServerError            5xx other than 501
    │   ├── NetworkError           timeout, refused or reset connection, DNS failure
    │   └── GateUnavailable        the account pacing store (Redis) failed: not called

    BaseUrlError (a ValueError from worker.checks.baseurl, not an OpsgenieError)
                                   the base URL is not an allowed Opsgenie host

No message here ever contains the key: it travels only in the Authorization header.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from models.base import Outcome
from worker.checks.baseurl import BaseUrlError, check_allowed
from worker.settings import ProbeName

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

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


@dataclass(frozen=True)
class Probe:
    """One read-only Opsgenie call that tells whether a key works (SPEC §4)."""

    name: ProbeName
    method: str
    path: str
    json_body: Mapping[str, Any] | None = None
    params: Mapping[str, str] | None = None


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
        probe: ProbeName = "authenticate",
        timeout: aiohttp.ClientTimeout | None = None,
        max_response_bytes: int = 64 * 1024,
        on_answer: Callable[[int | None, float], None] = lambda status, seconds: None,
    ) -> None:
        """`on_answer(status, seconds)` is told of every call: the HTTP status (None when
        no answer came) and the seconds until the response headers or the failure."""
        self._session = session
        self._allowed = frozenset(allowed_base_urls)
        self._urls: dict[str, str] = {}  # base URL -> the probe's URL, once allowed
        self.probe = PROBES[probe]
        self._timeout = timeout or aiohttp.ClientTimeout(total=10, connect=3)
        self._max_bytes = max_response_bytes
        self._on_answer = on_answer
        self._headers = {"Accept": "application/json"}
        self._body = None
        if self.probe.json_body is not None:
            # Encoded once: the body is the same for every key.
            self._body = json.dumps(self.probe.json_body).encode()
            self._headers["Content-Type"] = "application/json"

    def _url_for(self, base_url: str) -> str:
        url = self._urls.get(base_url)
        if url is None:
            url = check_allowed(base_url, self._allowed) + self.probe.path
            self._urls[base_url] = url
        return url

    async def check_key(self, base_url: str, key: str) -> Verdict:
        """Probe `key` against the account at `base_url`; raise on anything not final."""
        url = self._url_for(base_url)
        headers = {
            **self._headers,
            "Authorization": f"GenieKey {key}",
            "X-Request-ID": str(uuid.uuid4()),
        }
        started, answered = time.monotonic(), False
        try:
            async with self._session.request(
                self.probe.method,
                url,
                data=self._body,
                params=self.probe.params,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as response:
                answered = True
                self._on_answer(response.status, time.monotonic() - started)
                body = await _read_capped(response.content, self._max_bytes)
                return classify(response.status, response.headers, body)
        except TimeoutError as exc:
            raise NetworkError("Opsgenie did not answer in time", "timeout") from exc
        except aiohttp.ClientConnectorDNSError as exc:
            raise NetworkError("the Opsgenie host name did not resolve", "dns_error") from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(
                f"the connection to Opsgenie failed ({type(exc).__name__})", "connection_error"
            ) from exc
        finally:
            if not answered:
                self._on_answer(None, time.monotonic() - started)


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


def classify(status: int, headers: Mapping[str, str], body: bytes) -> Verdict:
    """Map one Opsgenie answer onto a verdict, or raise a TransientError (SPEC §5)."""
    details = _error_details(body)
    request_id = headers.get("X-Request-ID") or details.get("requestId")
    message = details.get("message")
    code = str(details["code"]) if details.get("code") is not None else None
    if 200 <= status < 300:
        return Verdict(Outcome.VALID, status, request_id=request_id)
    if status == 429:
        raise Throttled("Opsgenie throttled the account", _retry_after(headers))
    if status >= 500 and status != 501:
        raise ServerError(f"Opsgenie answered HTTP {status}", status)
    outcome = {401: Outcome.INVALID_KEY, 403: Outcome.KEY_LACKS_ACCESS}.get(
        status, Outcome.REJECTED
    )
    return Verdict(outcome, status, message, code, request_id)


_ERROR_FIELDS: dict[str, type | tuple[type, ...]] = {
    "message": str,
    "code": (str, int),
    "requestId": str,
}
"""The fields of an Opsgenie error body we use, with their types: anything else is
dropped, so a number where text belongs never reaches a Verdict's `str` fields."""


def _error_details(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {
        name: value
        for name, kind in _ERROR_FIELDS.items()
        if isinstance(value := parsed.get(name), kind) and not isinstance(value, bool)
    }


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait before calling the account again, if Opsgenie said."""
    for name in ("X-RateLimit-Period-In-Sec", "Retry-After"):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value)
        except ValueError:
            continue
        if 0 <= seconds <= 3600:
            return seconds
    return None
