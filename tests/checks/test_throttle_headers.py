"""Every 429 header form, read alone and replayed by the fake Opsgenie over real HTTP."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime

import aiohttp
import pytest

from worker.checks.opsgenie import OpsgenieClient, Throttled
from worker.checks.retries import RetryPolicy
from worker.platforms import OPSGENIE
from worker.platforms.throttle_headers import Wait, throttle_wait
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import RATE_LIMIT_HEADERS, KeyScenario

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)
EPOCH = int(NOW.timestamp())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-RateLimit-Period-In-Sec": "60"}, Wait(60.0, "X-RateLimit-Period-In-Sec")),
        ({"Retry-After": "7"}, Wait(7.0, "Retry-After")),
        ({"Retry-After": "Sun, 06 Dec 2026 12:00:30 GMT"}, Wait(30.0, "Retry-After")),
        ({"Retry-After": "Sun, 06 Dec 2026 11:00:00 GMT"}, Wait(0.0, "Retry-After")),
        ({"RateLimit": '"default";r=0;t=30'}, Wait(30.0, "RateLimit")),
        ({"RateLimit": '"a";r=5;t=2, "b";r=0;t=40'}, Wait(40.0, "RateLimit")),
        ({"RateLimit": "limit=10, remaining=0, reset=12"}, Wait(12.0, "RateLimit")),
        ({"RateLimit-Limit": "10", "RateLimit-Reset": "9"}, Wait(9.0, "RateLimit")),
        ({"RateLimit-Policy": '"default";q=10;w=60'}, Wait(60.0, "RateLimit")),
        ({"RateLimit-Policy": "10;w=1"}, Wait(1.0, "RateLimit")),
        (
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(EPOCH + 20)},
            Wait(20.0, "X-RateLimit-Remaining"),
        ),
        (
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str((EPOCH + 5) * 1000)},
            Wait(5.0, "X-RateLimit-Remaining"),
        ),
        (
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "3"},
            Wait(3.0, "X-RateLimit-Remaining"),
        ),
        # In order: Opsgenie's own header first, whatever else came.
        (
            {"Retry-After": "9", "X-RateLimit-Period-In-Sec": "1"},
            Wait(1.0, "X-RateLimit-Period-In-Sec"),
        ),
        ({"RateLimit": '"d";r=0;t=8', "Retry-After": "2"}, Wait(2.0, "Retry-After")),
        # A broken form gives way to the next usable one.
        ({"X-RateLimit-Period-In-Sec": "nan", "Retry-After": "3"}, Wait(3.0, "Retry-After")),
        ({"Retry-After": "-1", "RateLimit": '"d";r=0;t=4'}, Wait(4.0, "RateLimit")),
        # None usable: the backoff decides, and the first problem is named.
        ({}, Wait(None, None, "missing")),
        ({"X-RateLimit-Remaining": "3"}, Wait(None, None, "missing")),
        ({"X-RateLimit-Remaining": "0"}, Wait(None, None, "missing")),
        ({"Retry-After": "-5"}, Wait(None, None, "negative")),
        ({"Retry-After": "3601"}, Wait(None, None, "absurd")),
        ({"X-RateLimit-Period-In-Sec": "1e308"}, Wait(None, None, "absurd")),
        ({"Retry-After": "soon"}, Wait(None, None, "unparseable")),
        ({"Retry-After": "Sun, 06 Dec 2026 12:00:30"}, Wait(None, None, "unparseable")),
        ({"RateLimit": '"d";r=0;t=later'}, Wait(None, None, "unparseable")),
        ({"RateLimit-Policy": '"d";q=10'}, Wait(None, None, "unparseable")),
        ({"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "x"}, Wait(None, None, "unparseable")),
    ],
)
def test_each_header_form_is_read_in_order(headers: dict[str, str], expected: Wait) -> None:
    assert throttle_wait(headers, NOW) == expected


EXPECTED_FROM_THE_FAKE: dict[str, tuple[float | None, float | None, str | None]] = {
    # form: (at least, at most, problem)
    "opsgenie": (42, 42, None),
    "retry_after": (42, 42, None),
    "retry_after_date": (41, 44, None),  # an HTTP date has whole seconds
    "ratelimit": (42, 42, None),
    "ratelimit_policy": (42, 42, None),
    "ratelimit_reset": (42, 42, None),
    "x_ratelimit_remaining": (41, 44, None),
    "none": (None, None, "missing"),
    "negative": (None, None, "negative"),
    "absurd": (None, None, "absurd"),
    "unparseable": (None, None, "unparseable"),
}


def test_every_form_the_fake_sends_is_covered() -> None:
    assert set(EXPECTED_FROM_THE_FAKE) == set(RATE_LIMIT_HEADERS)


@pytest.mark.parametrize("form", RATE_LIMIT_HEADERS)
def test_a_429_from_a_real_server_is_honoured_in_each_form(fake: FakeOpsgenie, form: str) -> None:
    key = f"k-{uuid.uuid4().hex}"  # no piece of "THROTTLED": the key is scrubbed from headers
    fake.set_key(
        key,
        KeyScenario.from_dict(
            {"behaviour": "throttle", "times": -1, "period_seconds": 42, "rate_limit_headers": form}
        ),
    )

    async def probe() -> Throttled:
        async with aiohttp.ClientSession() as session:
            client = OpsgenieClient(session, allowed_base_urls=[fake.base_url])
            with pytest.raises(Throttled) as caught:
                await client.check_key(fake.base_url, key, platform=OPSGENIE, probe="alerts")
            return caught.value

    error = asyncio.run(probe())

    low, high, problem = EXPECTED_FROM_THE_FAKE[form]
    assert (error.problem, error.state, error.reason) == (problem, "THROTTLED", "ACCOUNT")
    if low is None:
        assert error.retry_after is None
    else:
        assert error.retry_after is not None and low <= error.retry_after <= (high or low)
    assert key not in str(error)


def test_a_429_without_a_usable_wait_backs_off_and_never_waits_for_ever() -> None:
    policy = RetryPolicy(max_attempts=5, backoff_base=1.0, backoff_cap=60.0, throttle_default=2.0)
    random.seed(7)
    for attempt in range(1, 12):
        error = Throttled("throttled", None, problem="absurd")
        delay = policy.delay_for(error, attempt)
        ceiling = max(2.0, min(60.0, 2 ** (attempt - 1)))
        assert 2.0 <= delay <= ceiling * 1.25
    named = policy.delay_for(Throttled("throttled", 42.0), 1)
    assert 42.0 <= named <= 42.0 * 1.25
