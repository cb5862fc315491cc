"""The API's Gatherer: POSTs that arrive while a group is being recorded form the next group."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import exc as sa_exc

from worker.checks.requests import Ask
from worker.enqueue import RequestView
from worker.web.errors import ApiError
from worker.web.grouping import Gatherer


def _view(ask: Ask) -> RequestView:
    return RequestView(
        id=f"request-for-{ask.team_id}",
        organization_id=ask.organization_id,
        integration_id=ask.integration_id,
        team_id=ask.team_id,
        requested_by="api",
        state="pending",
        outcome=None,
        message=None,
        http_status=None,
        error_code=None,
        works_on=[],
        rate_limit_state=None,
        rate_limit_reason=None,
        attempts=0,
        created_at=datetime.now(UTC),
        finished_at=None,
    )


class SlowStore:
    """Records groups as `ValidationClient.request_many` would, taking `seconds` each."""

    def __init__(self, seconds: float = 0.2, error: Exception | None = None) -> None:
        self.seconds = seconds
        self.error = error
        self.groups: list[list[str]] = []
        self.recording = threading.Event()

    def request_many(self, asks: Sequence[Ask]) -> dict[Ask, RequestView]:
        self.groups.append([ask.team_id for ask in asks])
        self.recording.set()
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return {ask: _view(ask) for ask in asks}


def _asks(count: int) -> list[Ask]:
    return [Ask(1, 2, f"2-team{i}") for i in range(count)]


async def _gather(gatherer: Gatherer, store: SlowStore, asks: list[Ask]) -> list[RequestView]:
    first = asyncio.create_task(gatherer.request(asks[0]))
    await asyncio.to_thread(store.recording.wait, 5)  # the first group is being recorded
    rest = [asyncio.create_task(gatherer.request(ask)) for ask in asks[1:]]
    return list(await asyncio.gather(first, *rest))


def test_posts_that_arrive_during_a_recording_form_the_next_group() -> None:
    store, asks = SlowStore(), _asks(8)
    gatherer = Gatherer(store, parallel=1)  # type: ignore[arg-type]

    views = asyncio.run(_gather(gatherer, store, asks))

    assert store.groups == [["2-team0"], [ask.team_id for ask in asks[1:]]]
    assert [view.team_id for view in views] == [ask.team_id for ask in asks]


def test_groups_are_capped() -> None:
    store, asks = SlowStore(seconds=0.05), _asks(9)
    gatherer = Gatherer(store, parallel=1, largest=3)  # type: ignore[arg-type]

    asyncio.run(_gather(gatherer, store, asks))

    assert [len(group) for group in store.groups] == [1, 3, 3, 2]


def test_a_failed_group_fails_each_of_its_posts_with_the_api_error() -> None:
    down = sa_exc.OperationalError("INSERT", {}, Exception("the server closed the connection"))
    store, asks = SlowStore(seconds=0.05, error=down), _asks(4)
    gatherer = Gatherer(store, parallel=1)  # type: ignore[arg-type]

    async def each() -> list[BaseException | RequestView]:
        first = asyncio.create_task(gatherer.request(asks[0]))
        await asyncio.to_thread(store.recording.wait, 5)
        rest = [asyncio.create_task(gatherer.request(ask)) for ask in asks[1:]]
        return list(await asyncio.gather(first, *rest, return_exceptions=True))

    answers = asyncio.run(each())

    assert len(answers) == 4
    for answer in answers:
        assert isinstance(answer, ApiError)
        assert (answer.status, answer.code) == (503, "database_unavailable")


@pytest.mark.parametrize("parallel", [1, 2])
def test_every_post_gets_its_own_answer(parallel: int) -> None:
    store, asks = SlowStore(seconds=0.01), _asks(50)
    gatherer = Gatherer(store, parallel=parallel, largest=7)  # type: ignore[arg-type]

    async def burst() -> list[RequestView]:
        return list(await asyncio.gather(*(gatherer.request(ask) for ask in asks)))

    views = asyncio.run(burst())

    assert [view.team_id for view in views] == [ask.team_id for ask in asks]
    assert sorted(team for group in store.groups for team in group) == sorted(
        ask.team_id for ask in asks
    )


@pytest.mark.parametrize("steps", range(6))
def test_a_post_just_after_a_drain_ends_is_still_recorded(steps: int) -> None:
    # A POST that arrives while the drain that answered the last one is finishing
    # (some loop steps after that answer) must still be recorded, not left waiting.
    store, asks = SlowStore(seconds=0.0), _asks(2)
    gatherer = Gatherer(store, parallel=1)  # type: ignore[arg-type]

    async def one_after_the_other() -> list[RequestView]:
        first = await gatherer.request(asks[0])
        for _ in range(steps):
            await asyncio.sleep(0)
        second = await gatherer.request(asks[1])  # in this step, not in a new task
        return [first, second]

    async def at_most_5_seconds() -> list[RequestView]:
        return await asyncio.wait_for(one_after_the_other(), 5)

    views = asyncio.run(at_most_5_seconds())

    assert [view.team_id for view in views] == ["2-team0", "2-team1"]


def test_groups_are_spaced_so_that_posts_under_load_share_one() -> None:
    store, asks = SlowStore(seconds=0.0), _asks(4)
    gatherer = Gatherer(store, parallel=1, spacing=0.2)  # type: ignore[arg-type]

    async def timed(ask: Ask) -> float:
        started = time.monotonic()
        await gatherer.request(ask)
        return time.monotonic() - started

    async def steady_then_idle() -> list[float]:
        began = time.monotonic()
        first = await timed(asks[0])  # the API was idle: recorded at once
        # Two more within the spacing: they wait for its end, and go as one group.
        second = asyncio.create_task(timed(asks[1]))
        await asyncio.sleep(0.05)
        third = asyncio.create_task(timed(asks[2]))
        waited = await asyncio.gather(second, third)
        assert time.monotonic() - began >= 0.2
        await asyncio.sleep(0.3)  # idle for longer than the spacing
        return [first, *waited, await timed(asks[3])]

    first, second, third, after_idle = asyncio.run(steady_then_idle())

    assert store.groups == [["2-team0"], ["2-team1", "2-team2"], ["2-team3"]]
    assert first < 0.1 and after_idle < 0.1
    assert 0.1 < second < 0.3 and third < second


def test_parallel_spaced_drains_record_no_empty_group() -> None:
    store, asks = SlowStore(seconds=0.0), _asks(30)
    gatherer = Gatherer(store, parallel=2, spacing=0.05)  # type: ignore[arg-type]

    async def waves() -> list[RequestView]:
        views = []
        for wave in range(3):
            batch = asks[wave * 10 : (wave + 1) * 10]
            views += await asyncio.gather(*(gatherer.request(ask) for ask in batch))
        return views

    views = asyncio.run(waves())

    assert [view.team_id for view in views] == [ask.team_id for ask in asks]
    assert all(store.groups) and sum(map(len, store.groups)) == 30
