"""Never call a good key bad on an upstream's word alone: confirmation and the guard.

Two defences stand between a failing verdict and a valid team's status:

- **Confirmation.** A verdict that would move a team from `valid` to `invalid_key`,
  `key_lacks_access` or `rejected` is written only after a second check of the same
  key, `confirm_after` seconds later, agrees (`worker/checks/records.py` does it;
  the request waits in the `confirming` state).
- **The mass-change guard** (this module). Per base URL, over a sliding window, it
  counts the checks of teams that were `valid` and the confirmed changes from
  `valid` to a failing status. When the changes exceed `threshold` of those checks,
  number at least `min_changes` and come from at least three accounts, the guard
  trips for that base URL: from then on such changes are *held* (`held_changes`),
  the teams keep `valid`, and the trip is announced once. One account revoking its
  own keys never trips it: that is a customer's decision, not an upstream's fault.
  The guard resets once a whole window has passed under the threshold.

The window lives where every worker sees it: in Redis (`RedisWindows`) when the
workers share one, else in the database (`DatabaseWindows`), inside the write's
own transaction. Both keep the same JSON document per base URL and decide with the
same `admit`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
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

log = logging.getLogger("ogv.guard")

MIN_ACCOUNTS = 3
"""Accounts whose keys must turn failing in one window before the guard may trip."""
BUCKETS = 10
"""A window is counted in this many buckets, so it slides by a tenth at a time."""

_WINDOWS = cast(Table, GuardWindow.__table__)

Counts = tuple[int, int, int]
"""Checks of valid teams, changes from valid to failing, and accounts (up to three)."""


@dataclass(frozen=True)
class Thresholds:
    """When the guard trips for a base URL."""

    window: float = 600.0
    threshold: float = 0.2
    min_changes: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(settings.guard_window, settings.guard_threshold, settings.guard_min_changes)

    def over(self, checks: int, changes: int, accounts: int) -> bool:
        """True when these counts of one window trip the guard."""
        return (
            changes > self.threshold * checks
            and changes >= self.min_changes
            and accounts >= MIN_ACCOUNTS
        )


@dataclass
class Bucket:
    """A tenth of a window: checks of valid teams, changes, and up to three accounts."""

    checks: int = 0
    changes: int = 0
    accounts: list[str] = field(default_factory=list)

    def add_account(self, account: str) -> None:
        # Three distinct accounts per bucket tell whether a window reaches three.
        if len(self.accounts) < MIN_ACCOUNTS and account not in self.accounts:
            self.accounts.append(account)


@dataclass
class Window:
    """One base URL's counts over the last window, and whether its guard is tripped."""

    buckets: dict[int, Bucket] = field(default_factory=dict)
    tripped_at: float | None = None
    """When the guard tripped (seconds since the epoch), or None."""
    trips: int = 0

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Window:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            {int(k): Bucket(*v) for k, v in data.get("b", {}).items()},
            data.get("t"),
            data.get("n", 0),
        )

    def to_json(self) -> str:
        buckets = {str(k): [b.checks, b.changes, b.accounts] for k, b in self.buckets.items()}
        return json.dumps({"b": buckets, "t": self.tripped_at, "n": self.trips})

    def slide(self, now: float, thresholds: Thresholds) -> Bucket:
        """Forget the buckets older than the window; the current bucket."""
        current = _bucket_of(now, thresholds)
        for index in [i for i in self.buckets if i <= current - BUCKETS]:
            del self.buckets[index]
        return self.buckets.setdefault(current, Bucket())

    def totals(self, now: float | None = None, thresholds: Thresholds | None = None) -> Counts:
        """Checks, changes, and distinct accounts (counted up to three) of the window:
        every bucket kept, or with `now`, those still inside the window."""
        buckets = list(self.buckets.items())
        if now is not None and thresholds is not None:
            oldest = _bucket_of(now, thresholds) - BUCKETS
            buckets = [(i, b) for i, b in buckets if i > oldest]
        accounts = {a for _, bucket in buckets for a in bucket.accounts}
        checks = sum(b.checks for _, b in buckets)
        return checks, sum(b.changes for _, b in buckets), len(accounts)

    def tripped(self, now: float, thresholds: Thresholds) -> bool:
        """Whether the guard holds changes now: tripped, and no whole window since has
        passed under the threshold."""
        if self.tripped_at is None:
            return False
        if now - self.tripped_at < thresholds.window:
            return True
        return thresholds.over(*self.totals(now, thresholds))


def _bucket_of(now: float, thresholds: Thresholds) -> int:
    return int(now // (thresholds.window / BUCKETS))


@dataclass(frozen=True)
class Trip:
    """The guard tripped for a base URL: to be announced once."""

    base_url: str
    at: datetime
    checks: int
    changes: int
    accounts: int
    window: float
    number: int = 0
    """Which trip of its base URL this is (the window's `trips`): names it once."""
    event_id: int | None = field(default=None, compare=False)
    """Its row in `base_url_events`, once recorded: what the webhook task reads."""

    @property
    def event(self) -> str:
        return "guard.tripped"

    @property
    def key(self) -> str:
        """The same idempotency key for every delivery of this trip's document."""
        digest = hashlib.sha256(f"{self.base_url}|{self.number}".encode()).hexdigest()[:24]
        return f"ogv-{self.event}-{digest}"

    def document(self) -> dict[str, Any]:
        """The webhook's JSON: counts and a base URL, never a key."""
        return {
            "event": self.event,
            "base_url": self.base_url,
            "at": self.at.isoformat(),
            "checks": self.checks,
            "changes": self.changes,
            "accounts": self.accounts,
            "window_s": self.window,
        }


@dataclass(frozen=True)
class Admission:
    """What the guard lets through of one batch's changes against one base URL."""

    allowed: int
    """The first `allowed` changes are written; the others are held."""
    trip: Trip | None = None
    reset: bool = False


def admit(
    window: Window,
    thresholds: Thresholds,
    now: float,
    base_url: str,
    checks: int,
    accounts: Sequence[str],
) -> Admission:
    """Count a batch's checks of valid teams and its changes (one account each, in
    the order they would be written) into `window`, and decide which are written.

    `checks` counts every verdict about a valid team, the changes among them. A
    change counts as a check when it comes, so a batch's allowance grows with it.
    While tripped, held changes are counted too: they keep the guard tripped for as
    long as the upstream keeps answering so.
    """
    bucket = window.slide(now, thresholds)
    reset = window.tripped_at is not None and not window.tripped(now, thresholds)
    if reset:
        window.tripped_at = None
    bucket.checks += checks - len(accounts)
    trip, allowed = None, 0
    for account in accounts:
        bucket.checks += 1
        bucket.changes += 1
        bucket.add_account(account)
        if window.tripped_at is not None:
            continue  # held
        totals = window.totals()
        if not thresholds.over(*totals):
            allowed += 1
            continue
        window.tripped_at, window.trips = now, window.trips + 1
        at = datetime.fromtimestamp(now, UTC)
        trip = Trip(base_url, at, *totals, thresholds.window, number=window.trips)
    return Admission(allowed, trip, reset)


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
        checks: int,
        accounts: Sequence[str],
    ) -> Admission:
        """Count one batch into `base_url`'s window atomically; `connection` is the
        write's transaction."""
        ...

    def read(self, connection: Connection) -> dict[str, Window]:
        """Every base URL's window, as it stands."""
        ...


class RedisWindows:
    """Windows in the Redis the workers share: one JSON value per base URL, changed in
    an optimistic transaction (WATCH / MULTI), retried when another worker wrote it."""

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
        checks: int,
        accounts: Sequence[str],
    ) -> Admission:
        key = self.prefix + base_url
        decided: list[Admission] = []

        def attempt(pipe: Any) -> None:
            window = Window.from_json(pipe.get(key))
            admission = admit(window, thresholds, self.clock(), base_url, checks, accounts)
            pipe.multi()
            # Kept three windows past the last write: an idle base URL forgets its
            # counts, which by then are under any threshold anyway.
            pipe.set(key, window.to_json(), ex=int(thresholds.window * 3) + 1)
            pipe.sadd(self.prefix + "urls", base_url)
            decided[:] = [admission]

        with _reaching_redis():
            self.client.transaction(attempt, key)
        return decided[0]

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
    write's transaction: batches against one base URL take turns for that moment."""

    where = "database"

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock

    def admit(
        self,
        connection: Connection,
        base_url: str,
        thresholds: Thresholds,
        checks: int,
        accounts: Sequence[str],
    ) -> Admission:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        connection.execute(
            dialect.insert(_WINDOWS)
            .values(base_url=base_url, buckets="{}", trips=0)
            .on_conflict_do_nothing(index_elements=["base_url"])
        )
        row = connection.execute(
            select(_WINDOWS.c.buckets, _WINDOWS.c.trips)
            .where(_WINDOWS.c.base_url == base_url)
            .with_for_update()
        ).one()
        window = Window.from_json(row.buckets)
        admission = admit(window, thresholds, self.clock(), base_url, checks, accounts)
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
        return admission

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
    """Checks of valid teams in the current window."""
    changes: int
    """Changes from valid to failing in the current window, held ones included."""
    accounts: int
    """Accounts among those changes (counted up to three a tenth of the window)."""
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
        found.append(
            GuardState(
                base_url,
                tripped,
                datetime.fromtimestamp(at, UTC) if at is not None else None,
                *window.totals(now, thresholds),
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
                "accounts": trip.accounts,
                "window_s": trip.window,
            },
        )
        metrics.guard_tripped(trip.base_url)


__all__ = [
    "Admission",
    "DatabaseWindows",
    "Guard",
    "GuardState",
    "RedisWindows",
    "SharedStateUnavailable",
    "Thresholds",
    "Trip",
    "Window",
    "Windows",
    "admit",
    "announce",
    "states",
]
