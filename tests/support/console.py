"""A fleet for the console's tests: organizations, teams in every status, a month of
status changes, base URLs' health, a tripped guard and the changes it holds.

Rows are written as the service would have left them (teams through
`worker.inventory`, the rest as the checks record it), so the console reads what a
running service shows. Labels hold markup, to prove the pages escape it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update

from models import (
    HeldChange,
    PlatformHealth,
    Team,
    TeamStatus,
    TeamStatusChange,
    utcnow,
)
from models.db import session_factory
from tests.support.api import Account, install
from worker.checks.guard import DatabaseWindows, Entry, Thresholds, Windows
from worker.testing.fake_opsgenie import FakeOpsgenie
from worker.testing.scenario import KeyScenario

HOSTILE_LABEL = "<script>alert('x')</script>&team"
"""A label an operator could type: the console must show it as text."""


@dataclass(frozen=True)
class Fleet:
    """What `seed` wrote: the accounts, the held teams, and the unavailable base URL."""

    busy: Account
    """An organization with a team in every status and two changes held."""
    quiet: Account
    held_teams: tuple[str, str]
    held_base_url: str
    """Where the guard tripped and holds them."""
    unavailable_base_url: str


def seed(
    database_url: str,
    fernet_key: str,
    fake: FakeOpsgenie,
    windows: Windows | None = None,
    thresholds: Thresholds | None = None,
) -> Fleet:
    """Write the fleet; the guard's window where the API reads it (`windows`, by
    default the database's)."""
    windows = windows or DatabaseWindows()
    thresholds = thresholds or Thresholds()
    labels = {
        "payments": TeamStatus.VALID,
        "billing": TeamStatus.VALID,
        "search": TeamStatus.VALID,
        "revoked": TeamStatus.INVALID_KEY,
        "readonly": TeamStatus.KEY_LACKS_ACCESS,
        "refused": TeamStatus.REJECTED,
        "fresh": TeamStatus.UNKNOWN,
        HOSTILE_LABEL: TeamStatus.INVALID_KEY,
    }
    busy = install(
        database_url, fernet_key, fake, {label: KeyScenario("valid") for label in labels}
    )
    quiet = install(database_url, fernet_key, fake, {"ops": KeyScenario("valid")})
    now = utcnow()
    run = uuid.uuid4().hex[:8]  # base URLs of this fleet's own: a database may hold others
    held_base_url = f"https://held-{run}.example/"
    sessions = session_factory(database_url)
    with sessions.begin() as session:
        for label, status in labels.items():
            failing = status not in (TeamStatus.VALID, TeamStatus.UNKNOWN)
            session.execute(
                update(Team)
                .where(Team.id == busy.teams[label])
                .values(
                    status=status,
                    status_changed_at=now - timedelta(days=2),
                    last_checked_at=now - timedelta(minutes=5),
                    last_error_code="opsgenie_401" if status is TeamStatus.INVALID_KEY else None,
                    last_http_status=401 if failing else 200,
                )
            )
        for day in range(27, -1, -3):  # oldest first, as ids grow; more changes lately
            for n in range(1 + (30 - day) // 10):
                session.add(
                    TeamStatusChange(
                        team_id=busy.teams["revoked" if n % 2 else "payments"],
                        request_id=uuid.uuid4(),
                        old_status=TeamStatus.VALID if n % 2 else TeamStatus.UNKNOWN,
                        new_status=TeamStatus.INVALID_KEY if n % 2 else TeamStatus.VALID,
                        changed_at=now - timedelta(days=day, minutes=10 - n),
                    )
                )
        unavailable = f"https://retired-{run}.example/"
        session.add_all(
            [
                PlatformHealth(
                    base_url=f"https://answering-{run}.example/",
                    platform="opsgenie",
                    window_started_at=now - timedelta(minutes=2),
                    answers=40,
                    unrecognised=1,
                ),
                PlatformHealth(
                    base_url=unavailable,
                    platform="opsgenie",
                    window_started_at=now - timedelta(minutes=1),
                    answers=25,
                    unrecognised=24,
                    unavailable_since=now - timedelta(hours=3),
                    changed_at=now - timedelta(hours=3),
                ),
            ]
        )
        # The guard trips as the workers trip it: 25 changes of 40 checks, 3 organizations.
        windows.admit(
            session.connection(),
            held_base_url,
            thresholds,
            [Entry(uuid.uuid4().hex, 1, change=False) for _ in range(15)]
            + [Entry(uuid.uuid4().hex, n % 3 + 1, change=True) for n in range(25)],
        )
        held = (busy.teams["billing"], busy.teams["search"])
        for team_id in held:
            session.add(
                HeldChange(
                    team_id=team_id,
                    request_id=uuid.uuid4(),
                    base_url=held_base_url,
                    account=f"acct-{busy.org}",
                    key_version=1,
                    old_status=TeamStatus.VALID,
                    new_status=TeamStatus.INVALID_KEY,
                    http_status=401,
                    error_code="opsgenie_401",
                    message="Key is invalid",
                    held_at=now - timedelta(minutes=1),
                )
            )
    return Fleet(busy, quiet, held, held_base_url, unavailable)
