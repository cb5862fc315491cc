"""Per-account rate limits and pauses, shared by every worker.

All keys of one Opsgenie account draw on the same buckets (SPEC §5), so the limit
is per account, not per key or per worker; and Opsgenie keeps one bucket per
request *domain* (SPEC §9): authenticate draws on the Configuration domain,
alerts on the Search domain. So a gate key names the platform, the domain and the
account (`gate_key`): `opsgenie:configuration:integration:12`,
`jsm-ops:search:integration:12`. Each has its own turns and pauses, and each
domain its own rate (`Pacings`). Two mechanisms:

- **Reservations** pace calls with GCRA (the generic cell rate algorithm): an
  account allows one call every `1/rate` seconds, with a burst of `burst`
  calls. `reserve({account: n})` books n calls and returns, for each, how long
  to wait before making it. A batch books all its calls in one round trip, and
  the bookings asked for in one pass of a process's event loop share one.
- **Pauses**: a 429 pauses the whole account for the period Opsgenie named.
  While paused, reservations book nothing and return the pause's remaining time.

With Redis both live in Redis, updated by one Lua script, so every worker
process on every host sees the same pacing. The embedded default (no Redis)
uses the same algorithm inside one process.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Protocol

import redis.asyncio as aioredis

from worker.platforms import ProbeName

DOMAINS: dict[ProbeName, str] = {"authenticate": "configuration", "alerts": "search"}
"""The rate-limit domain each probe draws on (SPEC §4 and §9)."""


def gate_key(platform: str, probe: ProbeName, integration_id: int) -> str:
    """The pacing and pause of one account (an Integration row) on `platform`, in the
    domain of `probe`."""
    return f"{platform}:{DOMAINS[probe]}:integration:{integration_id}"


class AccountGate(Protocol):
    async def reserve(self, calls: Mapping[str, int]) -> dict[str, list[float]]:
        """Book calls per account; for each, the seconds to wait before making it.

        A delay is negative when the turn had already come by the time the booking
        was answered (a busy worker reads its replies late).
        """

    async def pause(self, account: str, seconds: float) -> None:
        """Keep every worker from calling `account` for `seconds`."""

    async def paused_for(self, account: str) -> float:
        """Seconds left before `account` may be called again (0 when it may)."""

    @property
    def late_tolerance(self) -> float:
        """Seconds a call may leave after its turn (`Pacing.late_tolerance`)."""


PACING_MARGIN = 0.05
"""How much wider than strictly needed the turns are spaced (see `Pacing`)."""


class Pacing:
    """GCRA parameters: one call per `interval`, `burst` calls at once.

    Calls leave on their turns but some arrive late (a busy worker, network or
    receiver), and a late call lands in the next second beside that second's own
    calls. So the turns leave one call of room in every second: at `rate` 10 they
    come at most 9 in any one-second window (`rate - 1` a second, spaced
    `PACING_MARGIN` wider still), and one late arrival keeps a window within 10.
    Spaced at exactly 1/rate, 10 turns fit in a window and any late one made 11.

    How late may a call leave? A one-second window receives the calls whose turns
    fall in it, and those whose turns came before it by less than their lateness.
    `calls + 1` turns span `calls * interval` seconds (`calls`: the whole calls a
    second allows, at least one), so while lateness stays under
    `calls * interval - 1` seconds, no window receives more than `calls`: 167 ms
    at 10/s, and 50 ms or more at any rate up to 1,000/s. A call may leave up to
    half of that after its turn (`late_tolerance`); the other half is for the
    network and the receiver. A call later than that books a new turn.
    """

    def __init__(self, rate: float, burst: int = 1) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        room = max(rate - 1, rate / 2)  # one call a second of room; half the rate below 2
        self.interval_us = int(1_000_000 * (1 + PACING_MARGIN) / room)
        self.tolerance_us = (burst - 1) * self.interval_us
        calls = max(1, math.floor(rate))
        room_s = calls * self.interval_us / 1_000_000 - 1
        # At thousands of calls a second the whole-microsecond interval rounds the
        # room away; such a rate limits nothing real, so keep 20 ms there.
        self.late_tolerance = max(room_s / 2, 0.02)


class Pacings:
    """The pacing of each rate-limit domain: one for all, or its own for a probe's domain.

    A gate key's domain is its second part (`gate_key`); keys of another shape, and
    domains without their own, use `default`.
    """

    def __init__(self, default: Pacing, by_probe: Mapping[ProbeName, Pacing] | None = None):
        self.default = default
        self._by_domain = {DOMAINS[probe]: pacing for probe, pacing in (by_probe or {}).items()}
        every = (default, *self._by_domain.values())
        self.late_tolerance = min(pacing.late_tolerance for pacing in every)
        """The smallest of the domains': a call late by less is late for none of them."""

    def of(self, key: str) -> Pacing:
        if not self._by_domain:
            return self.default
        _, _, rest = key.partition(":")
        return self._by_domain.get(rest.partition(":")[0], self.default)


def _pacings(pacing: Pacing | Pacings | None) -> Pacings:
    if isinstance(pacing, Pacings):
        return pacing
    return Pacings(pacing or Pacing(rate=1_000_000))


class LocalGate:
    """A gate for one process: the stand-in when there is no Redis."""

    def __init__(self, pacing: Pacing | Pacings | None = None) -> None:
        self._pacings = _pacings(pacing)
        self.late_tolerance = self._pacings.late_tolerance
        self._paused_until: dict[str, float] = {}
        self._tat_us: dict[str, int] = {}

    async def reserve(self, calls: Mapping[str, int]) -> dict[str, list[float]]:
        now_us = int(time.monotonic() * 1_000_000)
        booked = {}
        for account, count in calls.items():
            paused = await self.paused_for(account)
            if paused > 0:
                booked[account] = [paused] * count
                continue
            pacing = self._pacings.of(account)
            tat = max(self._tat_us.get(account, now_us), now_us)
            delays = []
            for _ in range(count):
                delays.append(max(0, tat - pacing.tolerance_us - now_us) / 1_000_000)
                tat += pacing.interval_us
            self._tat_us[account] = tat
            booked[account] = delays
        return booked

    async def pause(self, account: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._paused_until[account] = max(until, self._paused_until.get(account, 0.0))

    async def paused_for(self, account: str) -> float:
        return max(0.0, self._paused_until.get(account, 0.0) - time.monotonic())


# KEYS: for each account, its pause key then its pacing key.
# ARGV: for each account, its call count, interval_us and tolerance_us.
# Returns the server's clock (microseconds since the epoch), then per account a flat
# list: count, then count delays in microseconds from that clock.
RESERVE_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {now}
for i = 1, #KEYS / 2 do
  local count = tonumber(ARGV[3 * i - 2])
  local interval = tonumber(ARGV[3 * i - 1])
  local tolerance = tonumber(ARGV[3 * i])
  local paused = redis.call('PTTL', KEYS[2 * i - 1])
  table.insert(out, count)
  if paused > 0 then
    for _ = 1, count do table.insert(out, paused * 1000) end
  else
    local tat = tonumber(redis.call('GET', KEYS[2 * i]) or now)
    if tat < now then tat = now end
    for _ = 1, count do
      local wait = tat - tolerance - now
      if wait < 0 then wait = 0 end
      table.insert(out, wait)
      tat = tat + interval
    end
    redis.call('SET', KEYS[2 * i], tat, 'PX', math.floor((tat - now) / 1000) + 1000)
  end
end
return out
"""


class RedisGate:
    """A gate in Redis, shared by every worker that uses the same server.

    Bookings asked for in one pass of the event loop go to Redis together, in one
    script call: a batch's up-front booking, and the calls of a batch that woke too
    late for their turns and book again (a busy loop wakes many at once). Each
    asker gets its turns in the order it asked.
    """

    def __init__(
        self, client: aioredis.Redis, pacing: Pacing | Pacings | None = None, namespace: str = "ogv"
    ) -> None:
        self._redis = client
        self._pacings = _pacings(pacing)
        self.late_tolerance = self._pacings.late_tolerance
        self.pause_prefix = f"{namespace}:pause:"
        self.pace_prefix = f"{namespace}:pace:"
        self._reserve = client.register_script(RESERVE_SCRIPT)
        self._asked: list[tuple[dict[str, int], asyncio.Future[dict[str, list[float]]]]] = []
        self._booking: asyncio.Task[None] | None = None

    async def reserve(self, calls: Mapping[str, int]) -> dict[str, list[float]]:
        asked = {account: count for account, count in calls.items() if count > 0}
        if not asked:
            return {}
        loop = asyncio.get_running_loop()
        turns: asyncio.Future[dict[str, list[float]]] = loop.create_future()
        self._asked.append((asked, turns))
        if self._booking is None:
            # Runs on the loop's next pass, once every call woken in this one has asked.
            self._booking = loop.create_task(self._book_asked())
        return await turns

    async def _book_asked(self) -> None:
        asked, self._asked, self._booking = self._asked, [], None
        total: Counter[str] = Counter()
        for calls, _ in asked:
            total.update(calls)
        try:
            booked = await self._book(total)
        except BaseException as exc:
            for _, turns in asked:
                if not turns.done():
                    turns.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        queues = {account: deque(delays) for account, delays in booked.items()}
        for calls, turns in asked:
            if not turns.done():  # an asker cancelled meanwhile leaves its turns unused
                turns.set_result(
                    {a: [queues[a].popleft() for _ in range(n)] for a, n in calls.items()}
                )

    async def _book(self, calls: Mapping[str, int]) -> dict[str, list[float]]:
        """Book `calls` in one script call: for each account, its delays in order."""
        accounts = list(calls)
        keys = [key for a in accounts for key in (self.pause_prefix + a, self.pace_prefix + a)]
        args: list[int] = []
        for account in accounts:
            pacing = self._pacings.of(account)
            args += (calls[account], pacing.interval_us, pacing.tolerance_us)
        sent = time.monotonic()
        flat = await self._reserve(keys=keys, args=args)
        # The delays count from the moment Redis ran the script. A busy worker may
        # read the reply much later; counted from then, its turns would fall late and
        # bunch with other workers' on-time calls. So take off the time since Redis
        # ran it, by its clock, but never more than the whole round trip (a host
        # whose clock is off cannot move its turns further than that).
        late = min(max(time.time() - int(flat[0]) / 1_000_000, 0.0), time.monotonic() - sent)
        booked, position = {}, 1
        for account in accounts:
            count = int(flat[position])
            booked[account] = [
                int(d) / 1_000_000 - late for d in flat[position + 1 : position + 1 + count]
            ]
            position += 1 + count
        return booked

    async def pause(self, account: str, seconds: float) -> None:
        ms = max(1, int(seconds * 1000))
        key = self.pause_prefix + account
        # Never shorten a longer pause another worker already set. Reading the TTL
        # and then setting it would race with a worker doing the same, so use two
        # commands that are each atomic: create the key only if it is missing, else
        # only lengthen its expiry (PEXPIRE GT, Redis 7). The loop covers a key that
        # expires between the two.
        for _ in range(3):
            if await self._redis.set(key, b"1", px=ms, nx=True):
                return
            if await self._redis.pexpire(key, ms, gt=True) or await self._redis.exists(key):
                return

    async def paused_for(self, account: str) -> float:
        ms = await self._redis.pttl(self.pause_prefix + account)
        return ms / 1000 if ms > 0 else 0.0
