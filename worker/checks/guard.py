"""Never call a good key bad on an upstream's word alone: confirmation and the guard.

Two defences stand between a failing verdict and a valid team's status:

- **Confirmation.** A verdict that would move a team from `valid` to `invalid_key`,
  `key_lacks_access` or `rejected` is written only after a second check of the same
  key, `confirm_after` seconds later, agrees (`worker/checks/records.py` does it;
  the request waits in the `confirming` state).
- **The mass-change guard** (this module). Per base URL, over a sliding window, it
  counts the checks of teams that were `valid` and the confirmed changes from
  `valid` to a failing status, each under the organization whose team it is. It
  trips when, counted as below, the changes exceed `threshold` of the checks, number
  at least `min_changes`, and come from at least `min_organizations` (N) distinct
  organizations. From then on such changes are *held* (`held_changes`), the teams
  keep `valid`, and the trip is announced once. The guard resets once a whole window
  has passed under the threshold.

**The rule that keeps tenants apart** (SPEC §8). An account name is free text and
proves nothing, so the guard never counts accounts: it counts organizations. And
each organization counts for at most `Thresholds.cap` changes, ⌈min_changes / N⌉
(7 by default): its changes past the cap count neither as changes nor as checks, as
if they had not happened. So:

- one organization, however many accounts it names and keys it revokes, is one
  organization: alone it never trips the guard (N ≥ 2), and its own revocations are
  always written;
- it supplies at most 1/N of the changes a trip needs: the other (N-1)/N must come
  from at least N-1 other organizations whose own keys turned failing in the same
  window, so it cannot turn one other organization's genuine revocation (or two)
  into a trip that holds it;
- a real upstream storm reaches every organization on the base URL at once, so each
  contributes up to its cap, the counted share stays each one's own share, and the
  guard trips after about N * cap changes over many organizations.

An organization's valid checks count in full, as any fleet's do: a big organization
with many valid keys makes a storm slower to see, never a revocation held.

**Counted once.** A change enters the window exactly once per committed write.
The database's window is counted inside the write's own transaction, so a write that
rolls back takes its counts with it. Redis is not part of that transaction: its
window remembers, for a window's length, each request's admission (`c` a check, `w`
a written change, `h` a held one), in the same WATCH/MULTI transaction that counts
it, so a write that is redone (a batch refused and written one by one, a lost
connection, a task retried) reuses the decision and counts nothing twice. A trip is
kept in the window as *not yet announced* (`Window.pending`); after the write that
saw it commits, `Windows.claim` flips it to announced, and only the process that
flipped it announces it: once, even when it was decided in an attempt that was then
rolled back or redone.

The window lives where every worker sees it: in Redis (`RedisWindows`) when the
workers share one, else in the database (`DatabaseWindows`), inside the write's
own transaction. Both keep the same JSON document per base URL and decide with the
same `admit`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import Connection, Table, select, update
from sqlalchemy.dialects import postgresql, sqlite

from models import GuardWindow

if TYPE_CHECKING:
    import redis

    from worker.settings import Settings

from worker.checks.guard_window import (
    BUCKETS,
    CHECK,
    HELD,
    WRITTEN,
    Admission,
    Bucket,
    Entry,
    Thresholds,
    Totals,
    Trip,
    Window,
    admit,
    claim_trip,
)

log = logging.getLogger("ogv.guard")

_WINDOWS = cast(Table, GuardWindow.__table__)


class SharedStateUnavailable(RuntimeError):
    """The Redis the workers share could not be reached: the guard's window can be
    neither read nor counted. A batch's write is then retried whole, like one whose
    database connection was lost; a command says which setting to check."""


class Windows(Protocol):
    """Where the guard's windows live."""

    where: str
    """For operators: `redis` or `database`."""

    def admit(
        self,
        connection: Connection,
        base_url: str,
        thresholds: Thresholds,
        entries: Sequence[Entry],
    ) -> Admission:
        """Count one batch into `base_url`'s window atomically, each request once;
        `connection` is the write's transaction."""
        ...

    def claim(self, connection: Connection, trip: Trip) -> bool:
        """Mark `trip` announced; True only for the one caller that marked it. Called
        once the write that saw it has committed; `connection` is a transaction of its
        own, committed by the caller."""
        ...

    def read(self, connection: Connection) -> dict[str, Window]:
        """Every base URL's window, as it stands."""
        ...


class RedisWindows:
    """Windows in the Redis the workers share: one JSON value per base URL, changed in
    an optimistic transaction (WATCH / MULTI), retried when another worker wrote it.
    Beside it, one key per request counted (`<namespace>:guard:seen:<request id>`,
    kept a window's length) holds its admission, so that a write redone reuses it."""

    where = "redis"

    def __init__(self, client: redis.Redis, namespace: str, clock: Callable[[], float] = time.time):
        self.client = client
        self.prefix = f"{namespace}:guard:"
        self.clock = clock

    def admit(
        self,
        connection: Connection,
        base_url: str,
        thresholds: Thresholds,
        entries: Sequence[Entry],
    ) -> Admission:
        key = self.prefix + base_url
        seen_keys = [f"{self.prefix}seen:{e.request_id}" for e in entries]
        decided: list[Admission] = []

        def attempt(pipe: Any) -> None:
            window = Window.from_json(pipe.get(key))
            before = pipe.mget(seen_keys) if seen_keys else []
            seen = {
                e.request_id: (v.decode() if isinstance(v, bytes) else v)
                for e, v in zip(entries, before, strict=True)
                if v is not None
            }
            fresh = [e for e in entries if e.request_id not in seen]
            admission = admit(window, thresholds, self.clock(), base_url, fresh)
            held = admission.held | {rid for rid, was in seen.items() if was == HELD}
            pipe.multi()
            # Kept three windows past the last write: an idle base URL forgets its
            # counts, which by then are under any threshold anyway.
            pipe.set(key, window.to_json(), ex=int(thresholds.window * 3) + 1)
            pipe.sadd(self.prefix + "urls", base_url)
            for entry in fresh:
                decision = HELD if entry.request_id in held else WRITTEN if entry.change else CHECK
                seen_key = f"{self.prefix}seen:{entry.request_id}"
                pipe.set(seen_key, decision, ex=int(thresholds.window) + 1)
            decided[:] = [Admission(frozenset(held), admission.trip, admission.reset)]

        with _reaching_redis():
            self.client.transaction(attempt, key)
        return decided[0]

    def claim(self, connection: Connection, trip: Trip) -> bool:
        key = self.prefix + trip.base_url
        claimed: list[bool] = []

        def attempt(pipe: Any) -> None:
            window = Window.from_json(pipe.get(key))
            claimed[:] = [claim_trip(window, trip)]
            pipe.multi()
            if claimed[0]:
                pipe.set(key, window.to_json(), keepttl=True)

        with _reaching_redis():
            self.client.transaction(attempt, key)
        return claimed[0]

    def read(self, connection: Connection) -> dict[str, Window]:
        with _reaching_redis():
            members = self.client.smembers(self.prefix + "urls")
            urls = sorted(u.decode() if isinstance(u, bytes) else u for u in members)
            values = self.client.mget([self.prefix + u for u in urls]) if urls else []
        return {u: Window.from_json(v) for u, v in zip(urls, values, strict=True) if v}


@contextlib.contextmanager
def _reaching_redis() -> Iterator[None]:
    """Turn a lost or refused Redis connection into `SharedStateUnavailable`."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise SharedStateUnavailable(
            f"the shared Redis is unreachable ({type(exc).__name__})"
        ) from exc


class DatabaseWindows:
    """Windows in `guard_windows`, read and written under the row's lock inside the
    write's transaction: batches against one base URL take turns for that moment, and
    a write that rolls back takes its counts with it."""

    where = "database"

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock

    def admit(
        self,
        connection: Connection,
        base_url: str,
        thresholds: Thresholds,
        entries: Sequence[Entry],
    ) -> Admission:
        window = self._locked(connection, base_url)
        admission = admit(window, thresholds, self.clock(), base_url, entries)
        self._store(connection, base_url, window)
        return admission

    def claim(self, connection: Connection, trip: Trip) -> bool:
        window = self._locked(connection, trip.base_url)
        if not claim_trip(window, trip):
            return False
        self._store(connection, trip.base_url, window)
        return True

    def _locked(self, connection: Connection, base_url: str) -> Window:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(
            dialect.insert(_WINDOWS)
            .values(base_url=base_url, buckets="{}", trips=0)
            .on_conflict_do_nothing(index_elements=["base_url"])
        )
        row = connection.execute(
            select(_WINDOWS.c.buckets).where(_WINDOWS.c.base_url == base_url).with_for_update()
        ).one()
        return Window.from_json(row.buckets)

    def _store(self, connection: Connection, base_url: str, window: Window) -> None:
        connection.execute(
            update(_WINDOWS)
            .where(_WINDOWS.c.base_url == base_url)
            .values(
                buckets=window.to_json(),
                trips=window.trips,
                tripped_at=(
                    datetime.fromtimestamp(window.tripped_at, UTC) if window.tripped_at else None
                ),
            )
        )

    def read(self, connection: Connection) -> dict[str, Window]:
        rows = connection.execute(select(_WINDOWS.c.base_url, _WINDOWS.c.buckets))
        return {row.base_url: Window.from_json(row.buckets) for row in rows}


@dataclass(frozen=True)
class Guard:
    """What stands between a failing verdict and a valid team: the confirmation delay
    and the windows of the mass-change guard (None: no guard)."""

    confirm_after: float = 0.0
    thresholds: Thresholds = field(default_factory=Thresholds)
    windows: Windows | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        return cls(
            settings.confirm_after, Thresholds.from_settings(settings), windows_for(settings)
        )


def windows_for(settings: Settings) -> Windows:
    """The shared Redis's windows when the workers have one, else the database's."""
    url = settings.shared_state_url
    return RedisWindows(_redis(url), settings.namespace) if url else DatabaseWindows()


@functools.cache
def _redis(url: str) -> redis.Redis:
    import redis  # only here: processes that share no Redis never load the client

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


@dataclass(frozen=True)
class GuardState:
    """One base URL's guard as operators read it."""

    base_url: str
    tripped: bool
    tripped_at: datetime | None
    checks: int
    """Checks of valid teams in the current window, as the guard counts them."""
    changes: int
    """Changes from valid to failing in the current window, held ones included, each
    organization's counted up to the cap."""
    organizations: int
    """Distinct organizations among those changes."""
    trips: int


def states(
    windows: Windows, connection: Connection, thresholds: Thresholds, now: float | None = None
) -> list[GuardState]:
    """Every base URL the guard has counted, tripped ones first."""
    now = time.time() if now is None else now
    found = []
    for base_url, window in windows.read(connection).items():
        tripped = window.tripped(now, thresholds)
        at = window.tripped_at if tripped else None
        totals = window.totals(thresholds, now)
        found.append(
            GuardState(
                base_url,
                tripped,
                datetime.fromtimestamp(at, UTC) if at is not None else None,
                totals.counted_checks,
                totals.counted_changes,
                totals.organizations,
                window.trips,
            )
        )
    return sorted(found, key=lambda s: (not s.tripped, s.base_url))


def announce(trips: Iterable[Trip]) -> None:
    """The log event and metric of each trip; the webhook is the caller's."""
    from worker import metrics

    for trip in trips:
        log.warning(
            trip.event,
            extra={
                "base_url": trip.base_url,
                "checks": trip.checks,
                "changes": trip.changes,
                "organizations": trip.organizations,
                "window_s": trip.window,
            },
        )
        metrics.guard_tripped(trip.base_url)


__all__ = [
    "BUCKETS",
    "Admission",
    "Bucket",
    "DatabaseWindows",
    "Entry",
    "Guard",
    "GuardState",
    "RedisWindows",
    "SharedStateUnavailable",
    "Thresholds",
    "Totals",
    "Trip",
    "Window",
    "Windows",
    "admit",
    "announce",
    "claim_trip",
    "states",
    "windows_for",
]
