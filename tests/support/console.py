"""A fleet for the console's tests: organizations, teams in every status, a month of
status changes, base URLs' health, a tripped guard and the changes it holds.

Rows are written as the service would have left them (teams through
`worker.inventory`, the rest as the checks record it), so the console reads what a
running service shows. Labels hold markup, to prove the pages escape it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update

from models import (
    GuardWindow,
    HeldChange,
    PlatformHealth,
    Team,
    TeamStatus,
    TeamStatusChange,
    utcnow,
)
from models.db import session_factory
from tests.support.api import Account, install
from worker.checks.guard import Bucket, Window
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


def seed(database_url: str, fernet_key: str, fake: FakeOpsgenie) -> Fleet:
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
        for day in range(0, 30, 3):  # a change every third day, more lately
            for n in range(1 + (30 - day) // 10):
                session.add(
                    TeamStatusChange(
                        team_id=busy.teams["revoked" if n % 2 else "payments"],
                        request_id=uuid.uuid4(),
                        old_status=TeamStatus.VALID if n % 2 else TeamStatus.UNKNOWN,
                        new_status=TeamStatus.INVALID_KEY if n % 2 else TeamStatus.VALID,
                        changed_at=now - timedelta(days=day, minutes=n),
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
        tripped = time.time() - 60
        accounts = ["acct-a", "acct-b", "acct-c"]
        window = Window({int(tripped // 30): Bucket(40, 30, accounts)}, tripped, 1)
        session.add(
            GuardWindow(
                base_url=held_base_url,
                buckets=window.to_json(),
                tripped_at=now - timedelta(minutes=1),
                trips=1,
            )
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
