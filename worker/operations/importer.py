"""`ogv team import`: onboarding a product's existing team table in bulk.

Input is JSON lines, one team each:
`{"organization_id": 1, "integration_id": 2, "label": "ops", "integration_key": "..."}`.
Lines are inserted in batches (one bulk INSERT per batch); a bad line is reported
with its number and a stable code and does not stop the import. No report and no
message ever contains a key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.orm import Session, sessionmaker

from models import OrganizationIntegration, Team
from models.crypto import KeyVault
from worker import inventory

FIELDS = {"organization_id": int, "integration_id": int, "label": str, "integration_key": str}


@dataclass(frozen=True)
class LineError:
    line: int
    code: str
    message: str


@dataclass
class ImportReport:
    imported: int = 0
    errors: list[LineError] = field(default_factory=list)


@dataclass(frozen=True)
class _Line:
    number: int
    organization_id: int
    integration_id: int
    label: str
    key: str = field(repr=False)  # never in a traceback or a debug dump


def import_teams(
    sessions: sessionmaker[Session], lines: Iterable[str], vault: KeyVault, batch_size: int = 500
) -> ImportReport:
    report = ImportReport()
    numbered = ((n, text) for n, text in enumerate(lines, start=1) if text.strip())
    for chunk in _chunks(numbered, batch_size):
        parsed = [item for item in (_parse(n, text, report) for n, text in chunk) if item]
        with sessions.begin() as session:
            report.imported += _insert(session, parsed, vault, report)
    report.errors.sort(key=lambda error: error.line)
    return report


def _chunks(items: Iterator[tuple[int, str]], size: int) -> Iterator[list[tuple[int, str]]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _parse(number: int, text: str, report: ImportReport) -> _Line | None:
    try:
        data: Any = json.loads(text)
    except ValueError:
        report.errors.append(LineError(number, "malformed_line", "the line is not JSON"))
        return None
    if not isinstance(data, dict) or any(
        type(data.get(name)) is not kind for name, kind in FIELDS.items()
    ):
        report.errors.append(
            LineError(
                number,
                "malformed_line",
                "expected organization_id and integration_id (integers), "
                "label and integration_key (strings)",
            )
        )
        return None
    line = _Line(
        number,
        data["organization_id"],
        data["integration_id"],
        data["label"],
        data["integration_key"],
    )
    try:
        inventory.check_label(line.label)
        inventory.check_key_format(line.key)
    except inventory.RecordError as exc:
        report.errors.append(LineError(number, exc.code, str(exc)))
        return None
    return line


def _insert(session: Session, lines: list[_Line], vault: KeyVault, report: ImportReport) -> int:
    if not lines:
        return 0
    pairs = {(line.organization_id, line.integration_id) for line in lines}
    links = {
        (org, integration): link_id
        for link_id, org, integration in session.execute(
            select(
                OrganizationIntegration.id,
                OrganizationIntegration.organization_id,
                OrganizationIntegration.integration_id,
            ).where(
                tuple_(
                    OrganizationIntegration.organization_id, OrganizationIntegration.integration_id
                ).in_(pairs)
            )
        )
    }
    wanted = {
        Team.make_id(links[pair], line.label)
        for line in lines
        if (pair := (line.organization_id, line.integration_id)) in links
    }
    taken = set(session.scalars(select(Team.id).where(Team.id.in_(wanted)))) if wanted else set()
    rows = []
    for line in lines:
        link_id = links.get((line.organization_id, line.integration_id))
        if link_id is None:
            report.errors.append(
                LineError(
                    line.number,
                    "unknown_integration",
                    f"integration {line.integration_id} is not installed for organization "
                    f"{line.organization_id}",
                )
            )
            continue
        team_id = Team.make_id(link_id, line.label)
        if team_id in taken:
            report.errors.append(
                LineError(
                    line.number, "duplicate_team", f"a team labelled {line.label!r} already exists"
                )
            )
            continue
        taken.add(team_id)
        rows.append(
            {
                "id": team_id,
                "organization_integration_id": link_id,
                "label": line.label,
                "encrypted_key": vault.encrypt(line.key),
            }
        )
    if rows:
        session.execute(insert(Team), rows)
    return len(rows)
