"""`ogv keys rotate`: re-encrypt every stored key under the newest encryption key.

Put the new Fernet key first in `OGV_ENCRYPTION_KEYS`, keeping the old ones
after it, and restart every worker and API with it; run the rotation; then drop
the old keys (and restart again). The rotation first asks every live worker and
API which keys it holds (worker/key_holders.py) and refuses while one of them
lacks the new key: it could decrypt nothing once the rotation ran. The rotation walks the teams
by id in batches, one short transaction each, so it can be stopped and run
again (`--after TEAM_ID` resumes, and a team already under the newest key is
simply re-encrypted again). A team whose key no configured encryption key can
decrypt is reported by id and left as it is; it does not stop the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from celery import Celery
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models import Team
from models.crypto import KeyVault, UndecryptableKey, fingerprint
from worker import key_holders
from worker.broker import kind_of
from worker.key_holders import KeyHolder
from worker.settings import Settings

ASK_SECONDS = 2.0
"""How long the rotation waits for the workers' answers to its broadcast."""


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


@dataclass(frozen=True)
class Readiness:
    """Whether every live process holds the new key; `refusal` says why not, in one line."""

    newest: str
    """The fingerprint of the new key (the first of OGV_ENCRYPTION_KEYS)."""
    holders: list[KeyHolder]
    refusal: str | None


def readiness(
    settings: Settings, app: Celery, sessions: sessionmaker[Session], timeout: float = ASK_SECONDS
) -> Readiness:
    """Ask every live worker (a broadcast) and API (its row) for its keys' fingerprints."""
    newest = fingerprint(settings.fernet_keys()[0])
    with sessions() as session:
        holders = key_holders.live_apis(session)
    if kind_of(settings.effective_broker_url) == "embedded":
        return Readiness(
            newest,
            holders,
            "the embedded broker carries no broadcasts, so the workers cannot be asked which "
            "keys they hold: restart them with the new OGV_ENCRYPTION_KEYS, then pass --force",
        )
    replies = app.control.broadcast(key_holders.KEYS_COMMAND, reply=True, timeout=timeout)
    holders = key_holders.workers_from_replies(replies or [], settings.namespace) + holders
    missing = key_holders.lacking(holders, newest)
    if not missing:
        return Readiness(newest, holders, None)
    names = ", ".join(str(holder) for holder in missing)
    return Readiness(
        newest,
        holders,
        f"{len(missing)} of {len(holders)} live processes lack the new key {newest} (the "
        f"first of OGV_ENCRYPTION_KEYS): {names}; restart them with it first, or pass --force",
    )
