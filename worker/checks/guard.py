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
import hashlib
import json
import logging
import math
import time
from collections import Counter
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

BUCKETS = 10
"""A window is counted in this many buckets, so it slides by a tenth at a time."""
ORGANIZATIONS_KEPT = 256
"""Organizations with changes kept by name in one bucket. Past them (a storm over that
many organizations in a tenth of a window), a change counts in full, uncapped."""

CHECK, WRITTEN, HELD = "c", "w", "h"
"""A request's admission, as the Redis window remembers it."""

_WINDOWS = cast(Table, GuardWindow.__table__)


@dataclass(frozen=True)
class Thresholds:
    """When the guard trips for a base URL."""

    window: float = 600.0
    threshold: float = 0.2
    min_changes: int = 20
    min_organizations: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            settings.guard_window,
            settings.guard_threshold,
            settings.guard_min_changes,
            settings.guard_min_organizations,
        )

    @property
    def cap(self) -> int:
        """The most changes one organization counts for: ⌈min_changes / N⌉."""
        return math.ceil(self.min_changes / self.min_organizations)

    def over(self, totals: Totals) -> bool:
        """True when these counts of one window trip the guard."""
        return (
            totals.counted_changes > self.threshold * totals.counted_checks
            and totals.counted_changes >= self.min_changes
            and totals.organizations >= self.min_organizations
        )


@dataclass(frozen=True)
class Totals:
    """One window's counts: as they came, and as the guard counts them (each
    organization's changes capped)."""

    checks: int = 0
    """Checks of valid teams, the changes among them."""
    changes: int = 0
    """Changes from valid to failing, held ones included."""
    organizations: int = 0
    """Distinct organizations among those changes."""
    counted_checks: int = 0
    """`checks` less the changes past each organization's cap."""
    counted_changes: int = 0
    """`changes`, each organization's counted up to the cap."""


@dataclass
class Bucket:
    """A tenth of a window: checks of valid teams, changes, and the changes of each
    organization (by id; `extra` past `ORGANIZATIONS_KEPT` of them)."""

    checks: int = 0
    changes: int = 0
    organizations: dict[str, int] = field(default_factory=dict)
    extra: int = 0

    def add_change(self, organization_id: int) -> None:
        self.changes += 1
        name = str(organization_id)
        if name in self.organizations or len(self.organizations) < ORGANIZATIONS_KEPT:
            self.organizations[name] = self.organizations.get(name, 0) + 1
        else:
            self.extra += 1


@dataclass
class Window:
    """One base URL's counts over the last window, and whether its guard is tripped."""

    buckets: dict[int, Bucket] = field(default_factory=dict)
    tripped_at: float | None = None
    """When the guard tripped (seconds since the epoch), or None."""
    trips: int = 0
    announced: int = 0
    """Trips announced so far: `trips - announced` is one trip waiting (`pending`)."""
    pending: dict[str, Any] | None = None
    """The document of the last trip, kept until it is announced."""

    @classmethod
    def from_json(cls, text: str | bytes | None) -> Window:
        if not text:
            return cls()
        data = json.loads(text)
        buckets = {}
        for k, v in data.get("b", {}).items():
            orgs = v[2] if len(v) > 2 and isinstance(v[2], dict) else {}
            buckets[int(k)] = Bucket(v[0], v[1], orgs, v[3] if len(v) > 3 else 0)
        trips = data.get("n", 0)
        return cls(buckets, data.get("t"), trips, data.get("a", trips), data.get("p"))

    def to_json(self) -> str:
        buckets = {
            str(k): [b.checks, b.changes, b.organizations, b.extra] for k, b in self.buckets.items()
        }
        document = {"b": buckets, "t": self.tripped_at, "n": self.trips, "a": self.announced}
        if self.pending is not None:
            document["p"] = self.pending
        return json.dumps(document, separators=(",", ":"))

    def slide(self, now: float, thresholds: Thresholds) -> Bucket:
        """Forget the buckets older than the window; the current bucket."""
        current = _bucket_of(now, thresholds)
        for index in [i for i in self.buckets if i <= current - BUCKETS]:
            del self.buckets[index]
        return self.buckets.setdefault(current, Bucket())

    def totals(self, thresholds: Thresholds, now: float | None = None) -> Totals:
        """The window's counts: every bucket kept, or with `now`, those still inside it."""
        buckets = list(self.buckets.items())
        if now is not None:
            oldest = _bucket_of(now, thresholds) - BUCKETS
            buckets = [(i, b) for i, b in buckets if i > oldest]
        per_organization: Counter[str] = Counter()
        for _, bucket in buckets:
            per_organization.update(bucket.organizations)
        extra = sum(b.extra for _, b in buckets)
        past_cap = sum(max(0, n - thresholds.cap) for n in per_organization.values())
        checks = sum(b.checks for _, b in buckets)
        changes = sum(b.changes for _, b in buckets)
        return Totals(
            checks,
            changes,
            len(per_organization) + (1 if extra else 0),
            checks - past_cap,
            changes - past_cap,
        )

    def tripped(self, now: float, thresholds: Thresholds) -> bool:
        """Whether the guard holds changes now: tripped, and no whole window since has
        passed under the threshold."""
        if self.tripped_at is None:
            return False
        if now - self.tripped_at < thresholds.window:
            return True
        return thresholds.over(self.totals(thresholds, now))

    def pending_trip(self, base_url: str) -> Trip | None:
        """The trip decided but not yet announced, if any."""
        if self.pending is None or self.announced >= self.trips:
            return None
        return Trip.from_document(base_url, self.trips, self.pending)


def _bucket_of(now: float, thresholds: Thresholds) -> int:
    return int(now // (thresholds.window / BUCKETS))


@dataclass(frozen=True)
class Trip:
    """The guard tripped for a base URL: to be announced once (its `number`-th trip)."""

    base_url: str
    at: datetime
    checks: int
    changes: int
    organizations: int
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
        """The webhook's JSON: counts as the guard counted them, never a key."""
        return {
            "event": self.event,
            "base_url": self.base_url,
            "at": self.at.isoformat(),
            "checks": self.checks,
            "changes": self.changes,
            "organizations": self.organizations,
            "window_s": self.window,
        }

    @classmethod
    def from_document(cls, base_url: str, number: int, kept: dict[str, Any]) -> Trip:
        return cls(
            base_url,
            datetime.fromtimestamp(kept["at"], UTC),
            kept["checks"],
            kept["changes"],
            kept["organizations"],
            kept["window_s"],
            number,
        )


@dataclass(frozen=True)
class Entry:
    """One verdict about a valid team, as the guard counts it."""

    request_id: str
    organization_id: int
    change: bool
    """A change from valid to failing (else a check that kept the team valid)."""


@dataclass(frozen=True)
class Admission:
    """What the guard made of one batch's verdicts against one base URL."""

    held: frozenset[str] = frozenset()
    """Request ids of the changes held; the batch's other changes are written."""
    trip: Trip | None = None
    """A trip not yet announced (decided now or by an earlier write): to be claimed
    (`Windows.claim`) once this write has committed."""
    reset: bool = False


def admit(
    window: Window,
    thresholds: Thresholds,
    now: float,
    base_url: str,
    entries: Sequence[Entry],
) -> Admission:
    """Count a batch's verdicts about valid teams (in the order they would be written)
    into `window`, and decide which changes are written and which held.

    A change counts as a check too, so a batch's allowance grows with it. While
    tripped, held changes are counted too: they keep the guard tripped for as long as
    the upstream keeps answering so.
    """
    bucket = window.slide(now, thresholds)
    reset = window.tripped_at is not None and not window.tripped(now, thresholds)
    if reset:
        window.tripped_at = None
    held: set[str] = set()
    for entry in entries:
        bucket.checks += 1
        if not entry.change:
            continue
        bucket.add_change(entry.organization_id)
        if window.tripped_at is not None:
            held.add(entry.request_id)
            continue
        totals = window.totals(thresholds)
        if not thresholds.over(totals):
            continue
        held.add(entry.request_id)
        window.tripped_at, window.trips = now, window.trips + 1
        window.pending = Trip(
            base_url,
            datetime.fromtimestamp(now, UTC),
            totals.counted_checks,
            totals.counted_changes,
            totals.organizations,
            thresholds.window,
        ).document() | {"at": now}
    return Admission(frozenset(held), window.pending_trip(base_url), reset)


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


def claim_trip(window: Window, trip: Trip) -> bool:
    """Mark `trip` announced in `window`; False when it was already."""
    if window.announced >= trip.number:
        return False
    window.announced = trip.number
    window.pending = None
    return True


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
    "Admission",
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
]
