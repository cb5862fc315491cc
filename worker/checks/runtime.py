"""What a worker process keeps for its whole life: one event loop, one HTTP session.

Celery runs tasks in plain threads (or forked children); the Opsgenie client is
async. Each process therefore runs one event loop in a daemon thread, opens one
`aiohttp.ClientSession` on it, and tasks hand it coroutines through `Runtime.run`.
The runtime is created on first use in the process that uses it, so a forked
child never inherits its parent's loop or sockets, and closed at shutdown.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aioredis

from worker.checks.opsgenie import OpsgenieClient
from worker.checks.ratelimit import AccountGate, LocalGate, Pacing, Pacings, RedisGate
from worker.metrics import opsgenie_call_observer
from worker.platforms import ProbeName
from worker.settings import Settings, get_settings

T = TypeVar("T")

REDIS_CONNECTIONS = 20
"""Connections from one worker process to Redis for pacing and pauses."""


class LoopThread:
    """An asyncio event loop running forever in a daemon thread."""

    def __init__(self, name: str = "ogv-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and wait for it; cancel it if the wait is cut short."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            # A soft time limit or timeout interrupts the wait: stop the coroutine too.
            future.cancel()
            raise

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class Runtime:
    """The process's loop, HTTP session, Opsgenie client and account gate."""

    loop: LoopThread
    session: aiohttp.ClientSession
    client: OpsgenieClient
    gate: AccountGate
    redis: aioredis.Redis | None
    pid: int

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.loop.run(coro, timeout)

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        loop = LoopThread()

        async def open_resources() -> tuple[aiohttp.ClientSession, aioredis.Redis | None]:
            connector = aiohttp.TCPConnector(
                limit=settings.http_connections, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
            client = None
            if settings.shared_state_url:
                # A batch's calls book their turns concurrently: wait for a free
                # connection rather than fail when they outnumber the pool.
                pool = aioredis.BlockingConnectionPool.from_url(
                    settings.shared_state_url, max_connections=REDIS_CONNECTIONS, timeout=10
                )
                client = aioredis.Redis(connection_pool=pool)
            return session, client

        session, redis_client = loop.run(open_resources())
        client = OpsgenieClient(
            session,
            allowed_base_urls=settings.allowed_base_urls,
            timeout=aiohttp.ClientTimeout(
                total=settings.total_timeout, connect=settings.connect_timeout
            ),
            max_response_bytes=settings.max_response_bytes,
            on_answer=opsgenie_call_observer,
        )
        pacings = pacings_of(settings)
        gate: AccountGate = (
            RedisGate(redis_client, pacings, settings.namespace)
            if redis_client
            else LocalGate(pacings)
        )
        return cls(loop, session, client, gate, redis_client, os.getpid())

    def close(self) -> None:
        async def close_resources() -> None:
            await self.session.close()
            if self.redis is not None:
                await self.redis.aclose()

        try:
            self.loop.run(close_resources(), timeout=5)
        finally:
            self.loop.stop()


def pacings_of(settings: Settings) -> Pacings:
    """`OGV_ACCOUNT_RATE` for every domain, but where a probe's override gives its own."""
    given: dict[ProbeName, float | None] = {
        "authenticate": settings.account_rate_authenticate,
        "alerts": settings.account_rate_alerts,
    }
    overrides = {
        probe: Pacing(rate, settings.account_burst)
        for probe, rate in given.items()
        if rate is not None
    }
    return Pacings(Pacing(settings.account_rate, settings.account_burst), overrides)


_runtime: Runtime | None = None
_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's runtime, started on first use (and anew in a forked child)."""
    global _runtime
    with _lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime.start(get_settings())
        return _runtime


def close_runtime() -> None:
    """Close this process's runtime, if it has one (worker shutdown)."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime.pid == os.getpid():
            _runtime.close()
        _runtime = None
