"""Grouping the API's POSTs: those that arrive together are recorded and sent together."""

from __future__ import annotations

import asyncio
import functools
import math

from worker.checks.requests import Ask
from worker.enqueue import RequestView
from worker.web.client import ValidationClient
from worker.web.errors import off_loop


class Gatherer:
    """Records concurrent POSTs together: one INSERT, one commit and one message each group.

    POSTs that arrive while `parallel` groups are being recorded wait for the
    next group, so under load groups grow by themselves (group commit). A group
    goes to the workers as one batch task, and a worker's cost is mostly per
    task, so the groups are also spaced: a group begins at least `spacing`
    seconds after the one before it began. A POST that finds the API idle for
    that long is recorded at once, alone; under load a POST waits at most
    `spacing` for the POSTs that come after it.
    """

    def __init__(
        self,
        client: ValidationClient,
        parallel: int = 1,
        largest: int = 100,
        spacing: float = 0.0,
    ) -> None:
        self.client = client
        self.parallel = parallel
        self.largest = largest
        self.spacing = spacing
        self._waiting: list[tuple[Ask, asyncio.Future[RequestView]]] = []
        self._draining = 0
        self._last_began = -math.inf
        self._tasks: set[asyncio.Task[None]] = set()  # referenced until done

    async def request(self, ask: Ask) -> RequestView:
        answer: asyncio.Future[RequestView] = asyncio.get_running_loop().create_future()
        self._waiting.append((ask, answer))
        if self._draining < self.parallel:
            self._draining += 1
            drain = asyncio.create_task(self._drain())
            self._tasks.add(drain)
            drain.add_done_callback(self._tasks.discard)
        return await answer

    async def _drain(self) -> None:
        # `_draining` drops in the same step as the last look at `_waiting`: a POST
        # that comes after it starts a drain of its own, none is left waiting.
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                if (pause := self._last_began + self.spacing - loop.time()) > 0:
                    await asyncio.sleep(pause)  # the POSTs arriving meanwhile join
                    if not self._waiting:
                        break  # another drain (parallel > 1) took them
                self._last_began = loop.time()
                group = self._waiting[: self.largest]
                del self._waiting[: self.largest]
                await self._record(group)
        finally:
            self._draining -= 1

    async def _record(self, group: list[tuple[Ask, asyncio.Future[RequestView]]]) -> None:
        asks = [ask for ask, _ in group]
        try:
            views = await off_loop(functools.partial(self.client.request_many, asks))
        except Exception as exc:
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(exc)
            return
        except BaseException:
            for _, answer in group:
                answer.cancel()  # the server is stopping: its POSTs are cancelled too
            raise
        for ask, answer in group:
            if not answer.done():
                answer.set_result(views[ask])
