"""The audit log's retention (OGV_AUDIT_RETENTION_DAYS): old events go a page at a time,
with the status history's paging (worker/periodic/retention.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, select

from models import AuditEvent, utcnow
from models.db import session_factory
from models.migrate import upgrade
from worker.periodic.retention import prune_audit


def test_events_older_than_the_retention_are_deleted_in_pages(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    upgrade(url)
    now = utcnow()
    ages = [500, 450, 401, 399, 10]  # days, oldest first as they were written
    sessions = session_factory(url)
    with sessions.begin() as session:
        for n, days in enumerate(ages):
            session.execute(
                insert(AuditEvent).values(
                    at=now - timedelta(days=days),
                    actor="cli:ops",
                    action="team.add",
                    target=str(n),
                    details="{}",
                )
            )

    assert prune_audit(sessions, 400, now=now, page_size=2) == 3
    with sessions() as session:
        kept = session.scalars(select(AuditEvent.target).order_by(AuditEvent.id)).all()
    assert kept == ["3", "4"]
    assert prune_audit(sessions, 400, now=now, page_size=2) == 0
    assert prune_audit(sessions, 0, now=now + timedelta(days=3650)) == 0  # 0 keeps all
