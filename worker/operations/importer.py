"""`ogv team import`: onboarding a product's existing team table in bulk.

Input is JSON lines, one team each:
`{"organization_id": 1, "integration_id": 2, "label": "ops", "integration_key": "..."}`.

An import is all or nothing: every line is checked (JSON, types, number ranges,
UTF-8, label and key format, the integration installed, the label free) and
every refused line is reported with its number and a stable code. If any line
was refused nothing is written, unless `skip_invalid` asks for the rest to be
written anyway. The whole file goes in one transaction, in chunks of one bulk
`INSERT ... ON CONFLICT DO NOTHING RETURNING` each: the database says which
labels were taken, so the cost per line stays the same however large the table
grows, and memory holds one chunk. No report and no message contains a key.

A line is read `LINE_MAX` bytes at most (`bounded_lines`): a longer one is skipped
to its end, unread, and refused, so a 200 MB line costs what a small file does.
The report lists the first `ERRORS_KEPT` refused lines and counts them all. A
written import is audited (`team.import`) in its own transaction.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import IO, Any, cast

from sqlalchemy import Table, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from models import OrganizationIntegration, Requester, Team, utcnow
from models.crypto import KeyVault
from models.integration import BIGINT_MAX, INTEGER_MAX, LABEL_MAX
from worker import audit, errors, inventory
from worker.checks.requests import Ask, insert_pending, pending_columns

FIELDS = {"organization_id": int, "integration_id": int, "label": str, "integration_key": str}
ID_RANGES = {"organization_id": BIGINT_MAX, "integration_id": INTEGER_MAX}
"""The largest id each column holds (organization ids are BIGINT, integration ids INTEGER)."""
LINE_MAX = 64 * 1024
"""The longest line read, in bytes: a team's line is a few hundred."""
READ_SIZE = 64 * 1024
ERRORS_KEPT = 100
"""Refused lines listed in a report (the first ones); the others are only counted."""

_TEAMS = cast(Table, Team.__table__)


@dataclass(frozen=True)
class LineError:
    line: int
    code: str
    message: str


@dataclass
class ImportReport:
    """What an import did: `imported` teams written, and every refused line."""

    imported: int = 0
    lines: int = 0
    errors: list[LineError] = field(default_factory=list)
    """The first ERRORS_KEPT refused lines, by line number."""
    refused: int = 0
    """How many lines were refused, listed or not."""
    written: bool = True
    """False when lines were refused and nothing was written (no `skip_invalid`)."""
    checks: int = 0
    """Checks asked for of the imported teams (`validate`), recorded with them."""
    batches: list[uuid.UUID] = field(default_factory=list)
    """The batches those checks are in: publish each once the import is committed."""

    def refuse(self, error: LineError) -> None:
        self.refused += 1
        self.errors.append(error)
        if len(self.errors) >= 2 * ERRORS_KEPT:  # keep the first ones, in bounded memory
            self.errors.sort(key=lambda e: e.line)
            del self.errors[ERRORS_KEPT:]


class LineTooLong:
    """A line longer than LINE_MAX bytes, skipped to its end without being kept."""


TOO_LONG = LineTooLong()


def bounded_lines(handle: IO[bytes], limit: int = LINE_MAX) -> Iterator[bytes | LineTooLong]:
    """The lines of `handle`, read READ_SIZE bytes at a time; TOO_LONG for each line
    over `limit` bytes, whose bytes are dropped as they are read."""
    kept = bytearray()
    skipping = False
    while block := handle.read(READ_SIZE):
        *ended, tail = block.split(b"\n")
        for piece in ended:
            too_long = skipping or len(kept) + len(piece) > limit
            yield TOO_LONG if too_long else bytes(kept + piece)
            kept.clear()
            skipping = False
        if not skipping and len(kept) + len(tail) > limit:
            skipping = True
            kept.clear()
        elif not skipping:
            kept += tail
    if skipping:
        yield TOO_LONG
    elif kept:
        yield bytes(kept)


class _Refused(Exception):
    """Raised inside the import's transaction to roll it back: a line was refused."""


@dataclass(frozen=True)
class _Line:
    number: int
    organization_id: int
    integration_id: int
    label: str
    key: str = field(repr=False)  # never in a traceback or a debug dump


def import_teams(
    sessions: sessionmaker[Session],
    lines: Iterable[bytes | str | LineTooLong],
    vault: KeyVault,
    *,
    skip_invalid: bool = False,
    batch_size: int = 1000,
    on_progress: Callable[[int], None] = lambda lines: None,
    actor: str | None = None,
    validate: Requester | None = None,
    check_batch_size: int = 250,
) -> ImportReport:
    """Import every line, or none of them if one is refused (unless `skip_invalid`).

    With `validate`, a pending check of every imported team is recorded in the same
    transaction, `check_batch_size` to a batch (`ImportReport.batches`, for the
    caller to publish after the commit).

    `lines` are raw lines of the file (bytes are decoded here, so a line that is
    not UTF-8 is reported like any other bad line). `on_progress(n)` is told how
    many lines have been read, after each chunk. With `actor`, a written import is
    audited in its transaction.
    """
    report = ImportReport()
    by_organization: Counter[int] = Counter()
    try:
        with sessions.begin() as session:
            links = _Links(session)
            for chunk in _chunks(enumerate(lines, start=1), batch_size):
                parsed = [line for line in (_parse(n, raw, report) for n, raw in chunk) if line]
                inserted = _insert(session, links.resolve(parsed, report), vault, report)
                report.imported += len(inserted)
                by_organization.update(ask.organization_id for ask in inserted)
                if validate is not None:
                    _ask_checks(session, inserted, validate, check_batch_size, report)
                report.lines = chunk[-1][0]
                on_progress(report.lines)
            if report.refused and not skip_invalid:
                raise _Refused
            if actor is not None:
                # One event per organization the file added teams to, each in its log.
                for organization_id, imported in sorted(by_organization.items()):
                    audit.record(
                        session,
                        actor,
                        "team.import",
                        organization_id=organization_id,
                        target=f"organization:{organization_id}",
                        details={
                            "imported": imported,
                            "lines": report.lines,
                            "refused": report.refused,
                        },
                    )
    except _Refused:
        report.imported, report.written = 0, False
        report.checks, report.batches = 0, []
    report.errors.sort(key=lambda error: error.line)
    del report.errors[ERRORS_KEPT:]
    return report


def _chunks(items: Iterator[tuple[int, Any]], size: int) -> Iterator[list[tuple[int, Any]]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _parse(number: int, raw: bytes | str | LineTooLong, report: ImportReport) -> _Line | None:
    def refuse(code: str, message: str) -> None:
        report.refuse(LineError(number, code, message))

    if isinstance(raw, LineTooLong):
        refuse("malformed_line", f"the line is longer than {LINE_MAX} bytes")
        return None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            refuse("invalid_encoding", "the line is not UTF-8")
            return None
    if not raw.strip():
        return None
    if len(raw) > LINE_MAX:
        refuse("malformed_line", f"the line is longer than {LINE_MAX} characters")
        return None
    try:
        data: Any = json.loads(raw)
    except ValueError:
        refuse("malformed_line", "the line is not JSON")
        return None
    if not isinstance(data, dict) or any(
        type(data.get(name)) is not kind for name, kind in FIELDS.items()
    ):
        refuse(
            "malformed_line",
            "expected organization_id and integration_id (integers), "
            "label and integration_key (strings)",
        )
        return None
    for name, largest in ID_RANGES.items():
        if not 1 <= data[name] <= largest:
            refuse("invalid", f"{name} must be an integer from 1 to {largest}")
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
    except errors.RecordError as exc:
        refuse(exc.code, str(exc))
        return None
    return line


class _Links:
    """Each organization's link to an integration, looked up once per import."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._known: dict[tuple[int, int], int | None] = {}

    def resolve(self, lines: list[_Line], report: ImportReport) -> list[tuple[_Line, int]]:
        """The lines whose integration is installed, each with its link id."""
        self._look_up({(line.organization_id, line.integration_id) for line in lines})
        found = []
        for line in lines:
            link_id = self._known[(line.organization_id, line.integration_id)]
            if link_id is None:
                report.refuse(
                    LineError(
                        line.number,
                        "unknown_integration",
                        f"integration {line.integration_id} is not installed for organization "
                        f"{line.organization_id}",
                    )
                )
            else:
                found.append((line, link_id))
        return found

    def _look_up(self, pairs: set[tuple[int, int]]) -> None:
        missing = pairs - self._known.keys()
        if not missing:
            return
        columns = (OrganizationIntegration.organization_id, OrganizationIntegration.integration_id)
        query = select(OrganizationIntegration.id, *columns).where(tuple_(*columns).in_(missing))
        self._known.update(dict.fromkeys(missing))
        for link_id, org, integration in self._session.execute(query):
            self._known[(org, integration)] = link_id


def _insert(
    session: Session, lines: list[tuple[_Line, int]], vault: KeyVault, report: ImportReport
) -> list[Ask]:
    """Insert the chunk's teams; a label already taken (before, or earlier in the file)
    is skipped by the database and reported. Returns the teams inserted, as asks."""
    if not lines:
        return []
    rows = {}
    for line, link_id in lines:
        team_id = Team.make_id(link_id, line.label)
        if team_id in rows:
            _duplicate(report, line)
            continue
        rows[team_id] = {
            "id": team_id,
            "organization_integration_id": link_id,
            "label": line.label,
            "encrypted_key": vault.encrypt(line.key),
        }
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = dialect.insert(_TEAMS).on_conflict_do_nothing().returning(_TEAMS.c.id)
    inserted = set(session.connection().execute(statement, list(rows.values())).scalars())
    for line, link_id in lines:
        team_id = Team.make_id(link_id, line.label)
        if team_id in rows and team_id not in inserted:
            _duplicate(report, line)
            del rows[team_id]  # reported once, even if the file repeats it
    asks: dict[str, Ask] = {}
    for line, link_id in lines:
        team_id = Team.make_id(link_id, line.label)
        if team_id in inserted:
            asks.setdefault(team_id, Ask(line.organization_id, line.integration_id, team_id))
    return list(asks.values())


def _ask_checks(
    session: Session, asks: list[Ask], requested_by: Requester, size: int, report: ImportReport
) -> None:
    """Record a pending check of each new team, `size` to a batch."""
    now = utcnow()
    for start in range(0, len(asks), size):
        batch_id = uuid.uuid4()
        rows = [
            {"organization_id": a.organization_id, "integration_id": a.integration_id,
             "team_id": a.team_id}
            for a in asks[start : start + size]
        ]  # fmt: skip
        insert_pending(session, rows, **pending_columns(requested_by, now), batch_id=batch_id)
        report.batches.append(batch_id)
        report.checks += len(rows)


def _duplicate(report: ImportReport, line: _Line) -> None:
    report.refuse(
        LineError(line.number, "duplicate_team", f"a team labelled {line.label!r} already exists")
    )


__all__ = [
    "ID_RANGES",
    "LABEL_MAX",
    "ImportReport",
    "LineError",
    "bounded_lines",
    "import_teams",
]
