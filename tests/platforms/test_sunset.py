"""Each account's deadline: 2027-04-05, migration + 120 days, or its switch-off."""

from __future__ import annotations

from datetime import date, timedelta

from worker.platforms import JSM_OPS, OPSGENIE, OPSGENIE_EU
from worker.platforms.sunset import account_deadline, deadline

TODAY = date(2026, 12, 6)


def test_an_account_migrated_100_days_ago_has_20_days_left() -> None:
    found = deadline(migrated_on=TODAY - timedelta(days=100))
    assert (found.on, found.reason, found.days_left(TODAY)) == (
        TODAY + timedelta(days=20),
        "migrated",
        20,
    )
    assert not found.passed(TODAY)


def test_an_account_switched_off_has_no_day_left() -> None:
    found = deadline(
        migrated_on=TODAY - timedelta(days=30), switched_off_on=TODAY - timedelta(days=2)
    )
    assert (found.on, found.reason, found.days_left(TODAY)) == (
        TODAY - timedelta(days=2),
        "switched_off",
        0,
    )
    assert found.passed(TODAY) and found.passed(TODAY - timedelta(days=2))
    assert not found.passed(TODAY - timedelta(days=3))


def test_an_account_not_migrated_keeps_the_end_of_support() -> None:
    found = deadline()
    assert (found.on, found.reason, found.days_left(TODAY)) == (
        date(2027, 4, 5),
        "end_of_support",
        120,
    )
    assert found.days_left(date(2027, 4, 6)) == 0


def test_a_migration_late_enough_leaves_the_end_of_support_first() -> None:
    found = deadline(migrated_on=date(2027, 1, 1))
    assert (found.on, found.reason) == (date(2027, 4, 5), "end_of_support")


def test_only_opsgenie_accounts_have_a_deadline() -> None:
    migrated = TODAY - timedelta(days=100)
    assert account_deadline(OPSGENIE, migrated, None) == deadline(migrated)
    assert account_deadline(OPSGENIE_EU, None, TODAY) == deadline(None, TODAY)
    assert account_deadline(JSM_OPS, migrated, TODAY) is None
