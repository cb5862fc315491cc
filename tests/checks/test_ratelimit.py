"""Per-account pauses: in one process, and shared through Redis (fake and real)."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from types import SimpleNamespace

import fakeredis
import pytest
import redis.asyncio as aioredis

from tests.support.services import NAMESPACE
from worker.checks import ratelimit
from worker.checks.opsgenie import AccountPaused
from worker.checks.ratelimit import AccountGate, LocalGate, Pacing, RedisGate
from worker.checks.rules import Target, wait_for_turn
from worker.platforms import OPSGENIE

ClientFactory = Callable[[], aioredis.Redis]


def account() -> str:
    return f"acct-{uuid.uuid4().hex}"


@pytest.fixture(params=["fakeredis", "redis"])
def redis_clients(request: pytest.FixtureRequest) -> Iterator[ClientFactory]:
    """A factory of async clients that all talk to the same server.

    Clients are bound to the event loop they are first used on, so tests call the
    factory inside their coroutine.
    """
    if request.param == "fakeredis":
        server = fakeredis.FakeServer()
        yield lambda: fakeredis.FakeAsyncRedis(server=server)
    else:
        url = request.getfixturevalue("redis_url")
        yield lambda: aioredis.Redis.from_url(url)


def run_with_gates(
    factory: ClientFactory, count: int, body: Callable[..., Awaitable[None]]
) -> None:
    """Run `body(*gates)` with `count` RedisGates, each on its own client."""

    async def main() -> None:
        async with AsyncExitStack() as stack:
            gates = []
            for _ in range(count):
                client = factory()
                stack.push_async_callback(client.aclose)
                gates.append(RedisGate(client, namespace=NAMESPACE))
            await body(*gates)

    asyncio.run(main())


async def assert_pause_then_expiry(gate: AccountGate) -> None:
    acme, other = account(), account()
    assert await gate.paused_for(acme) == 0.0

    await gate.pause(acme, 0.3)

    assert 0.2 < await gate.paused_for(acme) <= 0.3
    assert await gate.paused_for(other) == 0.0
    await asyncio.sleep(0.35)
    assert await gate.paused_for(acme) == 0.0


async def assert_never_shortened(gate: AccountGate) -> None:
    acme = account()
    await gate.pause(acme, 5.0)

    await gate.pause(acme, 0.1)

    assert 4.5 < await gate.paused_for(acme) <= 5.0
    await gate.pause(acme, 8.0)
    assert 7.5 < await gate.paused_for(acme) <= 8.0


# --- LocalGate -------------------------------------------------------------------------


def test_local_gate_pauses_then_expires() -> None:
    asyncio.run(assert_pause_then_expiry(LocalGate()))


def test_local_gate_never_shortens_a_pause() -> None:
    asyncio.run(assert_never_shortened(LocalGate()))


def test_local_gates_are_per_process_objects() -> None:
    async def main() -> None:
        first, second, acme = LocalGate(), LocalGate(), account()
        await first.pause(acme, 5.0)
        assert await second.paused_for(acme) == 0.0

    asyncio.run(main())


# --- RedisGate -------------------------------------------------------------------------


def test_redis_gate_pauses_then_expires(redis_clients: ClientFactory) -> None:
    run_with_gates(redis_clients, 1, assert_pause_then_expiry)


def test_redis_gate_never_shortens_a_pause(redis_clients: ClientFactory) -> None:
    run_with_gates(redis_clients, 1, assert_never_shortened)


def test_redis_gate_is_shared_between_workers(redis_clients: ClientFactory) -> None:
    async def body(worker_a: RedisGate, worker_b: RedisGate) -> None:
        acme = account()
        await worker_a.pause(acme, 2.0)

        assert 1.5 < await worker_b.paused_for(acme) <= 2.0
        # Worker B's shorter pause leaves worker A's longer one in place.
        await worker_b.pause(acme, 0.5)
        assert 1.5 < await worker_a.paused_for(acme) <= 2.0

    run_with_gates(redis_clients, 2, body)


def test_concurrent_pauses_keep_the_longest(redis_clients: ClientFactory) -> None:
    """Workers throttled at the same moment race; the longest pause must still win."""

    async def body(worker_a: RedisGate, worker_b: RedisGate) -> None:
        accounts = [account() for _ in range(20)]
        for acme in accounts:
            await asyncio.gather(worker_a.pause(acme, 60.0), worker_b.pause(acme, 0.5))

        left = [await worker_a.paused_for(acme) for acme in accounts]

        assert all(59.0 < seconds <= 60.0 for seconds in left), left

    run_with_gates(redis_clients, 2, body)


def test_redis_gate_stores_one_expiring_key_per_account(redis_clients: ClientFactory) -> None:
    async def main() -> None:
        client = redis_clients()
        try:
            acme = account()
            await RedisGate(client, namespace=NAMESPACE).pause(acme, 2.0)

            assert await client.get(f"{NAMESPACE}:pause:{acme}") == b"1"
            assert 1500 < await client.pttl(f"{NAMESPACE}:pause:{acme}") <= 2000
        finally:
            await client.aclose()

    asyncio.run(main())


def test_redis_gate_rounds_a_tiny_pause_up_to_a_millisecond(
    redis_clients: ClientFactory,
) -> None:
    async def body(gate: RedisGate) -> None:
        acme = account()
        await gate.pause(acme, 0.0)
        await asyncio.sleep(0.01)
        assert await gate.paused_for(acme) == 0.0

    run_with_gates(redis_clients, 1, body)


# --- Pacing (GCRA reservations) --------------------------------------------------------

INTERVAL = (1 + 0.05) / 9  # 10 calls a second: 9 turns, spaced 5% wider


async def assert_paced(gate: AccountGate) -> None:
    acme, other = account(), account()
    booked = await gate.reserve({acme: 4, other: 1})
    # Redis's turns count from when it ran the script, so the reply's own few
    # microseconds on the way back are already taken off.
    assert [round(d, 2) for d in booked[other]] == [0.0]
    assert [round(d, 2) for d in booked[acme]] == [round(i * INTERVAL, 2) for i in range(4)]
    # Later reservations queue behind the ones already booked.
    [next_delay] = (await gate.reserve({acme: 1}))[acme]
    assert 3 * INTERVAL < next_delay <= 4 * INTERVAL


async def assert_pause_holds_reservations(gate: AccountGate) -> None:
    acme = account()
    await gate.pause(acme, 2.0)
    delays = (await gate.reserve({acme: 3}))[acme]
    assert len(delays) == 3 and all(1.5 < d <= 2.0 for d in delays)


def test_local_gate_paces_calls_per_account() -> None:
    asyncio.run(assert_paced(LocalGate(Pacing(rate=10))))


def test_local_gate_pause_holds_reservations() -> None:
    asyncio.run(assert_pause_holds_reservations(LocalGate(Pacing(rate=10))))


def _paced_gates(factory: ClientFactory, body: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        first, second = factory(), factory()
        try:
            await body(
                RedisGate(first, Pacing(rate=10), NAMESPACE),
                RedisGate(second, Pacing(rate=10), NAMESPACE),
            )
        finally:
            await first.aclose()
            await second.aclose()

    asyncio.run(main())


def test_redis_gate_paces_calls_per_account(redis_clients: ClientFactory) -> None:
    async def body(gate: RedisGate, _: RedisGate) -> None:
        await assert_paced(gate)

    _paced_gates(redis_clients, body)


def test_redis_pacing_is_shared_between_workers(redis_clients: ClientFactory) -> None:
    async def body(one: RedisGate, two: RedisGate) -> None:
        acme = account()
        first = (await one.reserve({acme: 2}))[acme]
        second = (await two.reserve({acme: 2}))[acme]
        assert round(first[0], 2) == 0.0
        # The second worker books behind the first; a few ms pass between the two.
        for delay, turn in zip(second, (2, 3), strict=True):
            assert turn * INTERVAL - 0.05 < delay <= turn * INTERVAL

    _paced_gates(redis_clients, body)


def test_a_reply_read_late_keeps_the_turns_on_the_shared_clock(
    redis_clients: ClientFactory,
) -> None:
    # A busy worker reads Redis's answer long after Redis booked the turns. Counted
    # from the moment it reads them, its calls would leave late and bunch with
    # other workers' calls booked right after; counted from Redis's clock they do not.
    async def body(busy: RedisGate, other: RedisGate) -> None:
        acme = account()
        script = busy._reserve

        async def answered_late(*args: object, **kwargs: object) -> object:
            reply = await script(*args, **kwargs)
            await asyncio.sleep(0.3)  # the worker was busy elsewhere
            return reply

        busy._reserve = answered_late  # type: ignore[method-assign]
        late = (await busy.reserve({acme: 5}))[acme]
        on_time = (await other.reserve({acme: 1}))[acme]

        loop = asyncio.get_running_loop()
        now = loop.time()
        turns = sorted(now + delay for delay in [*late, *on_time])
        # Turns 0, 1 and 2 passed while the reply was on its way (negative delays),
        # and all six stay a full interval apart on one timeline.
        assert sum(delay < 0 for delay in late) == 3
        gaps = [later - earlier for earlier, later in itertools.pairwise(turns)]
        assert all(gap > INTERVAL - 0.02 for gap in gaps), gaps

    _paced_gates(redis_clients, body)


def test_redis_pause_holds_reservations_for_every_worker(redis_clients: ClientFactory) -> None:
    async def body(one: RedisGate, two: RedisGate) -> None:
        acme = account()
        await one.pause(acme, 2.0)
        delays = (await two.reserve({acme: 3}))[acme]
        assert len(delays) == 3 and all(1.5 < d <= 2.0 for d in delays)

    _paced_gates(redis_clients, body)


def test_pacing_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Pacing(rate=0)
    with pytest.raises(ValueError):
        Pacing(rate=1, burst=0)


# --- Turns missed by a busy event loop --------------------------------------------------


def _target() -> Target:
    return Target("1-t", "t", "acct", 1, "https://api.opsgenie.com/", "k", 1, OPSGENIE, "alerts")


def test_a_missed_turn_is_booked_again_not_spent_late() -> None:
    async def main() -> None:
        gate = LocalGate(Pacing(rate=10))
        loop = asyncio.get_running_loop()
        await gate.reserve({_target().gate_key: 3})  # turns now, +0.1, +0.2 are taken
        started = loop.time()
        await wait_for_turn(_target().gate_key, gate, turn=started - 1.0, max_wait=5)
        # Sent on its old turn it would have left at once; it waited for a free one.
        assert loop.time() - started >= 3 * INTERVAL - 0.02

    asyncio.run(main())


def test_an_on_time_turn_is_kept() -> None:
    async def main() -> None:
        gate = LocalGate(Pacing(rate=10))
        loop = asyncio.get_running_loop()
        started = loop.time()
        await wait_for_turn(_target().gate_key, gate, turn=started + 0.05, max_wait=5)
        assert 0.04 <= loop.time() - started < 0.09
        # Nothing was booked: the account's next turn is still free now.
        assert (await gate.reserve({_target().gate_key: 1}))[_target().gate_key] == [0.0]

    asyncio.run(main())


def test_a_turn_too_far_off_goes_back_to_the_queue() -> None:
    async def main() -> None:
        gate = LocalGate(Pacing(rate=10))
        await gate.pause(_target().gate_key, 30)
        with pytest.raises(AccountPaused):
            await wait_for_turn(_target().gate_key, gate, turn=None, max_wait=5)

    asyncio.run(main())


@pytest.mark.parametrize("rate", [0.5, 1, 1.5, 1.9, 2, 2.5, 5, 10, 10.9, 20, 50, 100, 1000])
def test_calls_sent_late_never_put_an_account_over_its_rate(rate: float) -> None:
    pacing = Pacing(rate)
    interval = pacing.interval_us / 1_000_000
    # A one-second window receives the calls whose turns fall in the second before
    # it ends plus their lateness: up to the tolerance at the sender, and nearly as
    # much again on the way (the network's half).
    lateness = pacing.late_tolerance + 0.99 * pacing.late_tolerance
    most_in_a_second = math.ceil((1 + lateness) / interval)
    assert most_in_a_second <= max(1, math.floor(rate))
    assert pacing.late_tolerance >= 0.025  # room enough for a busy worker


def test_a_call_late_by_less_than_the_tolerance_keeps_its_turn() -> None:
    async def main() -> None:
        gate = LocalGate(Pacing(rate=10))
        assert gate.late_tolerance == pytest.approx((10 * INTERVAL - 1) / 2, abs=1e-5)
        loop = asyncio.get_running_loop()
        await gate.reserve({_target().gate_key: 1})  # the turn this call was given
        started = loop.time()
        await wait_for_turn(_target().gate_key, gate, turn=started - 0.06, max_wait=5)
        assert loop.time() - started < 0.02  # sent at once
        # It booked nothing more: the account's next turn is still one interval on.
        [delay] = (await gate.reserve({_target().gate_key: 1}))[_target().gate_key]
        assert delay == pytest.approx(INTERVAL, abs=0.02)

    asyncio.run(main())


class _AnsweredLate(LocalGate):
    """Books like LocalGate, but every answer comes 30 ms after its turn passed."""

    def __init__(self) -> None:
        super().__init__(Pacing(rate=10))
        self.bookings = 0

    async def reserve(self, calls: Mapping[str, int]) -> dict[str, list[float]]:
        self.bookings += 1
        return {account: [-0.03] * count for account, count in calls.items()}


def test_a_turn_booked_just_now_is_not_missed() -> None:
    # Booked again and again, a busy worker would spend the account's turns and then
    # give up on an idle account; a fresh turn that already passed is taken at once.
    gate = _AnsweredLate()

    asyncio.run(wait_for_turn(_target(), gate, turn=None, max_wait=5))

    assert gate.bookings == 1


def test_a_clock_that_is_off_moves_turns_by_no_more_than_the_round_trip(
    redis_clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(gate: RedisGate, _: RedisGate) -> None:
        acme = account()
        for skew in (10.0, -10.0):  # this host's clock ten seconds ahead, then behind
            ahead = SimpleNamespace(time=lambda s=skew: time.time() + s, monotonic=time.monotonic)
            monkeypatch.setattr(ratelimit, "time", ahead)
            [delay] = (await gate.reserve({acme: 1}))[acme]
            monkeypatch.undo()
            assert -1.0 < delay <= 2 * INTERVAL

    _paced_gates(redis_clients, body)
