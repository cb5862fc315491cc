"""The mass-change guard's window: what it counts and when it trips, without storage.

One base URL's window is a JSON document of buckets (checks of valid teams, changes
under each organization, capped); `admit` counts one batch into it and decides which
changes are written, which are held, and whether the guard trips. The rule and why
it keeps tenants apart are in worker/checks/guard.py, which keeps the windows in
Redis or the database and applies them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger("ogv.guard")

BUCKETS = 10
"""A window is counted in this many buckets, so it slides by a tenth at a time."""
ORGANIZATIONS_KEPT = 256
"""Organizations with changes kept by name in one bucket. Past them (a storm over that
many organizations in a tenth of a window), a change counts in full, uncapped."""

CHECK, WRITTEN, HELD = "c", "w", "h"
"""A request's admission, as the Redis window remembers it."""


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


def claim_trip(window: Window, trip: Trip) -> bool:
    """Mark `trip` announced in `window`; False when it was already."""
    if window.announced >= trip.number:
        return False
    window.announced = trip.number
    window.pending = None
    return True
