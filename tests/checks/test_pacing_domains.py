"""Pacing per account *and* rate-limit domain: separate turns, pauses and rates."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis

from worker.checks.ratelimit import AccountGate, LocalGate, Pacing, Pacings, RedisGate, gate_key
from worker.checks.runtime import pacings_of
from worker.settings import Settings

SLOW, FAST = Pacing(rate=2), Pacing(rate=10)


def keys() -> tuple[str, str, str]:
    """One account's authenticate, alerts and JSM Ops keys."""
    account = int(uuid.uuid4().int % 2**31)
    return (
        gate_key("opsgenie", "authenticate", account),
        gate_key("opsgenie", "alerts", account),
        gate_key("jsm-ops", "alerts", account),
    )


def test_a_gate_key_names_platform_domain_and_account() -> None:
    assert gate_key("opsgenie", "authenticate", 12) == "opsgenie:configuration:integration:12"
    assert gate_key("opsgenie-eu", "alerts", 12) == "opsgenie-eu:search:integration:12"
    assert gate_key("jsm-ops", "alerts", 12) == "jsm-ops:search:integration:12"


def test_each_domain_takes_its_own_rate() -> None:
    pacings = Pacings(FAST, {"authenticate": SLOW})
    authenticate, alerts, jsm = keys()
    assert (pacings.of(authenticate), pacings.of(alerts), pacings.of(jsm)) == (SLOW, FAST, FAST)
    assert pacings.of("an-old-style-key") is FAST
    assert pacings.late_tolerance == min(SLOW.late_tolerance, FAST.late_tolerance)


def test_settings_give_each_probe_its_override_or_the_account_rate() -> None:
    settings = Settings(account_rate=10, account_rate_alerts=3)
    pacings = pacings_of(settings)
    authenticate, alerts, _ = keys()
    assert pacings.of(authenticate).interval_us == Pacing(10).interval_us
    assert pacings.of(alerts).interval_us == Pacing(3).interval_us
    assert (settings.rate_for("authenticate"), settings.slowest_account_rate) == (10, 3)


async def assert_domains_apart(gate: AccountGate) -> None:
    authenticate, alerts, jsm = keys()
    booked = await gate.reserve({authenticate: 3, alerts: 3, jsm: 2})
    slow, fast = SLOW.interval_us / 1e6, FAST.interval_us / 1e6
    # Each domain's turns start now and follow its own rate; none waits for another's.
    assert [round(d / slow, 1) for d in booked[authenticate]] == [0.0, 1.0, 2.0]
    assert [round(d / fast, 1) for d in booked[alerts]] == [0.0, 1.0, 2.0]
    assert [round(d / fast, 1) for d in booked[jsm]] == [0.0, 1.0]
    # A 429 on the Search domain pauses it alone.
    await gate.pause(alerts, 5.0)
    again = await gate.reserve({authenticate: 1, alerts: 1})
    assert 4.5 < again[alerts][0] <= 5.0
    assert again[authenticate][0] < 3.5 * slow
    assert await gate.paused_for(authenticate) == 0.0


def test_a_local_gate_keeps_domains_apart() -> None:
    asyncio.run(assert_domains_apart(LocalGate(Pacings(FAST, {"authenticate": SLOW}))))


def test_a_redis_gate_keeps_domains_apart_in_one_script_call(redis_url: str) -> None:
    async def main() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            calls = counting(client)
            gate = RedisGate(client, Pacings(FAST, {"authenticate": SLOW}), f"t{uuid.uuid4().hex}")
            await assert_domains_apart(gate)
            # Three domains booked together went to Redis in one script call.
            assert calls[0] == 2
        finally:
            await client.aclose()

    asyncio.run(main())


def counting(client: aioredis.Redis) -> list[int]:
    """Count the script calls that ran through `client` (the reservations); a call that
    only found the script not yet loaded on a fresh server (NOSCRIPT) is not one."""
    calls = [0]
    original: Callable[..., Awaitable[object]] = client.evalsha

    async def evalsha(*args: object, **kwargs: object) -> object:
        result = await original(*args, **kwargs)
        calls[0] += 1
        return result

    client.evalsha = evalsha  # type: ignore[method-assign]
    return calls
