"""Each Opsgenie account's deadline, and how close it is (SPEC §7 and §9).

Opsgenie's REST API ends on 2027-04-05 for everyone, but an account that
migrated to JSM Operations turns its Opsgenie off 120 days after its migration,
or earlier when an admin switches it off, and its Opsgenie integrations stop
working then. So an account's **deadline** is the earliest of

    Opsgenie's end of support                 2027-04-05
    the day it migrated + 120 days            `Integration.migrated_on`
    the day it was switched off               `Integration.switched_off_on`

"Today" is always a parameter (the UTC day of `models.utcnow()` by default), so
that tests and reports can ask about any day without waiting for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from models import utcnow
from worker.platforms.base import Platform
from worker.platforms.opsgenie import OPSGENIE_END_OF_SUPPORT

SWITCH_OFF_AFTER = timedelta(days=120)
"""How long after its migration an account's Opsgenie turns itself off."""

WARN_DAYS = 30
"""Days left at which `ogv health` warns and a valid key's hint says to move."""
FAIL_DAYS = 7
"""Days left at which `ogv health` fails."""
NOTICE_DAYS = (30, 7, 1)
"""Days left at which the status webhook is told, once each."""


def today() -> date:
    """The UTC day of the database clock helper (`models.utcnow`)."""
    return utcnow().date()


@dataclass(frozen=True)
class Deadline:
    """One account's last day on Opsgenie, and why that day."""

    on: date
    reason: str
    """`end_of_support`, `migrated` (migration + 120 days) or `switched_off`."""

    def days_left(self, on: date | None = None) -> int:
        """Whole days from `on` (default: today, UTC) to the deadline; 0 once it has come."""
        return max(0, (self.on - (on or today())).days)

    def passed(self, on: date | None = None) -> bool:
        """True from the deadline on: the account's Opsgenie no longer answers for its keys."""
        return (on or today()) >= self.on


def deadline(
    migrated_on: date | None = None,
    switched_off_on: date | None = None,
    end_of_support: date = OPSGENIE_END_OF_SUPPORT,
) -> Deadline:
    """The earliest of `end_of_support`, `migrated_on` + 120 days, and `switched_off_on`."""
    candidates = [(end_of_support, "end_of_support")]
    if migrated_on is not None:
        candidates.append((migrated_on + SWITCH_OFF_AFTER, "migrated"))
    if switched_off_on is not None:
        candidates.append((switched_off_on, "switched_off"))
    on, reason = min(candidates, key=lambda candidate: candidate[0])
    return Deadline(on, reason)


def account_deadline(
    platform: Platform, migrated_on: date | None, switched_off_on: date | None
) -> Deadline | None:
    """The deadline of an account on `platform`; None on a platform with no end (JSM Ops)."""
    if platform.end_of_support is None:
        return None
    return deadline(migrated_on, switched_off_on, platform.end_of_support)


__all__ = [
    "FAIL_DAYS",
    "NOTICE_DAYS",
    "SWITCH_OFF_AFTER",
    "WARN_DAYS",
    "Deadline",
    "account_deadline",
    "deadline",
    "today",
]
