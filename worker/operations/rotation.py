"""`ogv keys rotate`: re-encrypt every stored key under the newest encryption key.

Put the new Fernet key first in `OGV_ENCRYPTION_KEYS`, keeping the old ones
after it; run the rotation; then drop the old keys. The rotation walks the teams
by id in batches, one short transaction each, so it can be stopped and run
again (`--after TEAM_ID` resumes, and a team already under the newest key is
simply re-encrypted again). A team whose key no configured encryption key can
decrypt is reported by id and left as it is; it does not stop the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import Team
from models.crypto import KeyVault, UndecryptableKey


@dataclass
class RotationReport:
    rotated: int = 0
    undecryptable: list[str] = field(default_factory=list)
    last_team_id: str | None = None


def count_teams(sessions: sessionmaker[Session], after: str = "") -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).where(Team.id > after)) or 0


def rotate(
    sessions: sessionmaker[Session],
    vault: KeyVault,
    *,
    after: str = "",
    batch_size: int = 500,
    progress: Callable[[int], None] = lambda done: None,
) -> RotationReport:
    """Re-encrypt every team's key under the vault's first key, in batches."""
    report = RotationReport()
    while True:
        with sessions.begin() as session:
            teams = session.scalars(
                select(Team)
                .where(Team.id > after)
                .order_by(Team.id)
                .limit(batch_size)
                .with_for_update()
            ).all()
            for team in teams:
                try:
                    team.encrypted_key = vault.rotate(team.encrypted_key)
                    report.rotated += 1
                except UndecryptableKey:
                    report.undecryptable.append(team.id)
        if not teams:
            return report
        after = report.last_team_id = teams[-1].id
        progress(report.rotated + len(report.undecryptable))
