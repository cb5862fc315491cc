"""How long a 429 asks to be left alone: every header form it may come with.

Opsgenie names its throttle period; Atlassian's newer endpoints send `Retry-After`
and the IETF RateLimit headers, some in draft forms. They are read in this order,
and the first that gives a usable number wins:

1. `X-RateLimit-Period-In-Sec: 60` (Opsgenie, SPEC §5);
2. `Retry-After: 30` or `Retry-After: Wed, 21 Oct 2026 07:28:00 GMT` (RFC 9110 §10.2.3);
3. the IETF headers (draft-ietf-httpapi-ratelimit-headers): the structured form
   `RateLimit: "default";r=0;t=30` (`t`: seconds until the quota resets; the
   exhausted items, `r=0`, decide), the older `RateLimit: limit=10, remaining=0,
   reset=30` and `RateLimit-Reset: 30`, and else the window of
   `RateLimit-Policy: "default";q=10;w=60` (or `10;w=60`);
4. `X-RateLimit-Remaining: 0` with `X-RateLimit-Reset` (seconds from now, or an
   epoch time in seconds or milliseconds).

A value that is negative, absurd (more than `MAX_WAIT`) or unparseable is skipped
for the next form. When none is usable the answer is a `Wait` without seconds and
with the `problem` (`missing`, or what was wrong with the first one seen): the
caller backs off instead, counts it, and never crashes nor waits for ever.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_WAIT = 3600.0
"""The longest wait a header may ask for; a longer one is absurd (`absurd`)."""
EPOCH_SECONDS = 1_000_000_000
"""A reset at least this large is a point in time (epoch seconds), not a duration."""
EPOCH_MILLISECONDS = 1_000_000_000_000

PROBLEMS = ("missing", "negative", "absurd", "unparseable")
"""Why a 429's headers gave no wait: counted, and then the backoff decides."""


@dataclass(frozen=True)
class Wait:
    """What a 429's headers asked: `seconds` from `source`, or None and a `problem`."""

    seconds: float | None
    source: str | None = None
    problem: str | None = None


class _Unusable(ValueError):
    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


def throttle_wait(headers: Mapping[str, str], now: datetime | None = None) -> Wait:
    """The wait a 429 asked for with `headers`, read in the documented order."""
    now = now or datetime.now(UTC)
    first_problem: str | None = None
    forms: tuple[tuple[str, Callable[[Mapping[str, str], datetime], float | None]], ...] = (
        ("X-RateLimit-Period-In-Sec", _period_in_sec),
        ("Retry-After", _retry_after),
        ("RateLimit", _ietf),
        ("X-RateLimit-Remaining", _x_remaining),
    )
    for source, read in forms:
        try:
            seconds = read(headers, now)
        except _Unusable as exc:
            first_problem = first_problem or exc.problem
            continue
        if seconds is not None:
            return Wait(seconds, source)
    return Wait(None, None, first_problem or "missing")


def _checked(seconds: float) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        raise _Unusable("unparseable")
    if seconds < 0:
        raise _Unusable("negative")
    if seconds > MAX_WAIT:
        raise _Unusable("absurd")
    return seconds


def _number(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise _Unusable("unparseable") from None
    return _checked(number)


def _period_in_sec(headers: Mapping[str, str], now: datetime) -> float | None:
    value = headers.get("X-RateLimit-Period-In-Sec")
    return _number(value) if value is not None else None


def _retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    if re.fullmatch(r"\s*-?[0-9]+(\.[0-9]+)?\s*", value):
        return _number(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        raise _Unusable("unparseable") from None
    if when.tzinfo is None:
        raise _Unusable("unparseable")  # an HTTP date is GMT; one without a zone is not one
    # A date already past asks for no wait at all.
    return _checked(max(0.0, (when - now).total_seconds()))


def _ietf(headers: Mapping[str, str], now: datetime) -> float | None:
    """`RateLimit` (structured or the older dictionary), `RateLimit-Reset`, then the
    window of `RateLimit-Policy`."""
    value = headers.get("RateLimit")
    if value is not None:
        seconds = _ratelimit_field(value)
        if seconds is not None:
            return seconds
    reset = headers.get("RateLimit-Reset")
    if reset is not None:
        return _number(reset)
    policy = headers.get("RateLimit-Policy")
    if policy is not None:
        return _policy_window(policy)
    return None


def _ratelimit_field(value: str) -> float | None:
    items = _sf_list(value)
    if any("t" in params for _, params in items):
        exhausted = [p for _, p in items if p.get("r") == "0"] or [p for _, p in items]
        return max(_number(p["t"]) for p in exhausted if "t" in p) if exhausted else None
    # The older draft: one dictionary, `limit=10, remaining=0, reset=30`.
    fields = dict(_dictionary(value))
    if "reset" in fields:
        return _number(fields["reset"])
    if not fields and not items:
        raise _Unusable("unparseable")
    return None


def _policy_window(value: str) -> float | None:
    windows = [_number(params["w"]) for _, params in _sf_list(value) if "w" in params]
    if not windows:
        raise _Unusable("unparseable")
    return max(windows)


def _x_remaining(headers: Mapping[str, str], now: datetime) -> float | None:
    remaining = headers.get("X-RateLimit-Remaining")
    if remaining is None or remaining.strip() != "0":
        return None
    reset = headers.get("X-RateLimit-Reset")
    if reset is None:
        raise _Unusable("missing")
    moment = _number_or_time(reset)
    if moment >= EPOCH_MILLISECONDS:
        return _checked(max(0.0, moment / 1000 - now.timestamp()))
    if moment >= EPOCH_SECONDS:  # a reset already past asks for no wait
        return _checked(max(0.0, moment - now.timestamp()))
    return _checked(moment)


def _number_or_time(value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise _Unusable("unparseable") from None
    if math.isnan(number) or math.isinf(number):
        raise _Unusable("unparseable")
    return number


_MEMBER = re.compile(
    r'\s*("(?:[^"\\]|\\.)*"|[^;,]*)((?:\s*;\s*[^;,=\s]+(?:=(?:"[^"]*"|[^;,]*))?)*)\s*'
)


def _sf_list(value: str) -> list[tuple[str, dict[str, str]]]:
    """Members of a structured-field list (RFC 8941), with their parameters, as text."""
    members = []
    for part in _split_outside_quotes(value):
        match = _MEMBER.fullmatch(part)
        if match is None:
            raise _Unusable("unparseable")
        item, raw_params = match.group(1).strip(), match.group(2)
        params = {}
        for param in raw_params.split(";")[1:]:
            name, _, text = param.strip().partition("=")
            params[name.strip().lower()] = text.strip().strip('"')
        members.append((item.strip('"'), params))
    return members


def _dictionary(value: str) -> list[tuple[str, str]]:
    pairs = []
    for part in _split_outside_quotes(value):
        name, equals, text = part.partition("=")
        if equals and re.fullmatch(r"\s*[a-z][a-z0-9_-]*\s*", name):
            pairs.append((name.strip(), text.strip().partition(";")[0]))
    return pairs


def _split_outside_quotes(value: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


__all__ = ["MAX_WAIT", "PROBLEMS", "Wait", "throttle_wait"]
