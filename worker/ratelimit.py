"""Pauses per Opsgenie account, shared by every worker.

All keys of one account draw on the same Opsgenie bucket, so when one call is
throttled (429), every call to that account waits out the period Opsgenie named.
With Redis the pause is a key with a millisecond expiry that every worker process
and host sees; the embedded default (no Redis) keeps it in the process.
"""

from __future__ import annotations

import time
from typing import Protocol

import redis.asyncio as aioredis


class AccountGate(Protocol):
    async def pause(self, account: str, seconds: float) -> None:
        """Keep every worker from calling `account` for `seconds`."""

    async def paused_for(self, account: str) -> float:
        """Seconds left before `account` may be called again (0 when it may)."""


class LocalGate:
    """A gate for one process: the stand-in when there is no Redis."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    async def pause(self, account: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        self._until[account] = max(until, self._until.get(account, 0.0))

    async def paused_for(self, account: str) -> float:
        return max(0.0, self._until.get(account, 0.0) - time.monotonic())


class RedisGate:
    """A gate in Redis, shared by every worker that uses the same server."""

    PREFIX = "ogv:pause:"

    def __init__(self, client: aioredis.Redis) -> None:
        self._redis = client

    async def pause(self, account: str, seconds: float) -> None:
        ms = max(1, int(seconds * 1000))
        key = self.PREFIX + account
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
        ms = await self._redis.pttl(self.PREFIX + account)
        return ms / 1000 if ms > 0 else 0.0
