"""`ogv team`: store one team's integration key or import many; list, show and
remove teams, and replace a team's key (through `ValidationClient`, as a web app does).

Keys are read from standard input, never from argv (argv is visible to every user
of the machine through `ps`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from worker.operations.cli.output import (
    ExitCode,
    JsonOption,
    confirming,
    console,
    emit,
    fail,
    is_team_id,
)

app = typer.Typer(no_args_is_help=True, help="Teams and their integration keys.")


@app.command("add")
def team_add(
    org: Annotated[int, typer.Option(help="The organization id.")],
    integration: Annotated[int, typer.Option(help="The integration id.")],
    label: Annotated[str, typer.Option(help="The team's label, unique in the integration.")],
    as_json: JsonOption = False,
) -> None:
    """Store a team's integration key, read from standard input (asked for, unechoed,
    on a terminal)."""
    from models.crypto import KeyVault
    from worker import audit, inventory
    from worker.database import session_factory
    from worker.errors import RecordError
    from worker.settings import get_settings

    if sys.stdin.isatty():
        import getpass

        key = getpass.getpass("Integration key (not shown): ").strip()
    else:
        key = sys.stdin.readline().strip()
    settings = get_settings()
    try:
        with session_factory().begin() as session:
            team = inventory.add_team(
                session,
                organization_id=org,
                integration_id=integration,
                label=label,
                integration_key=key,
                vault=KeyVault(settings.fernet_keys()),
            )
            team_id = team.id
            audit.record(
                session,
                audit.cli_actor(),
                "team.add",
                organization_id=org,
                target=team_id,
                details={"integration_id": integration, "label": label},
            )
    except RecordError as exc:
        fail(exc.code, str(exc), as_json)
    emit({"team_id": team_id}, as_json, lambda: console.print(f"team {team_id}"))


@app.command("import")
def team_import(
    source: Annotated[str, typer.Argument(help="A JSON-lines file, or - for standard input.")],
    skip_invalid: Annotated[
        bool,
        typer.Option("--skip-invalid", help="Write the good lines even if some are refused."),
    ] = False,
    validate: Annotated[
        bool, typer.Option("--validate", help="Ask for a check of every imported team.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Add teams in bulk from JSON lines: all of them, or none if a line is refused.

    Every refused line is reported by number; the keys never appear in the output.
    With --validate, a check of each imported team is recorded with it and queued
    once the import is committed, in batches of OGV_BATCH_SIZE.
    """
    from models import Requester
    from models.crypto import KeyVault
    from worker import audit
    from worker.database import session_factory
    from worker.operations.importer import bounded_lines, import_teams
    from worker.settings import get_settings

    settings = get_settings()
    vault = KeyVault(settings.fernet_keys())
    try:
        handle = sys.stdin.buffer if source == "-" else Path(source).open("rb")  # noqa: SIM115
    except OSError as exc:
        fail("not_found", f"cannot read {source}: {exc.strerror or exc}", as_json)
    with handle, _import_progress(handle, quiet=as_json) as progress:
        report = import_teams(
            session_factory(),
            bounded_lines(handle),
            vault,
            skip_invalid=skip_invalid,
            on_progress=progress,
            actor=audit.cli_actor(),
            validate=Requester.CLI if validate else None,
            check_batch_size=settings.batch_size,
        )
    if report.batches:
        from worker.celery import app as celery_app
        from worker.enqueue import publish_batch

        # Recorded before they are published: a batch lost here is the outbox's to send.
        for batch_id in report.batches:
            publish_batch(celery_app, batch_id)
    emit(report, as_json, lambda: _print_import(report))
    if report.refused:
        raise typer.Exit(ExitCode.REFUSED)


@contextlib.contextmanager
def _import_progress(handle: Any, quiet: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on a terminal: bytes read of the file (lines, for a pipe)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeElapsedColumn

    try:
        size: int | None = os.fstat(handle.fileno()).st_size or None
    except (OSError, ValueError):
        size = None
    stderr = Console(stderr=True)
    with Progress(
        "importing", BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=stderr,
        disable=quiet or not stderr.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("importing", total=size)
        yield lambda lines: bar.update(task, completed=handle.tell() if size else lines)


def _print_import(report: Any) -> None:
    refused = report.refused
    if report.written:
        checks = f", {report.checks} checks queued" if report.checks else ""
        console.print(f"imported {report.imported} teams, {refused} lines refused{checks}")
    else:
        console.print(
            f"nothing imported: {refused} of {report.lines} lines refused "
            "(fix them, or give --skip-invalid to import the rest)"
        )
    for error in report.errors:
        console.print(f"  line {error.line}: {error.code}: {error.message}", highlight=False)
    if refused > len(report.errors):
        console.print(
            f"  and {refused - len(report.errors)} more refused lines (the first "
            f"{len(report.errors)} are listed)",
            highlight=False,
        )


@app.command("list")
def team_list(
    org: Annotated[int, typer.Option(help="The organization id.")],
    integration: Annotated[int | None, typer.Option(help="Only this integration's.")] = None,
    status: Annotated[str | None, typer.Option(help="Only teams of this status.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (1 to 100).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next_cursor of the last page.")] = None,
    as_json: JsonOption = False,
) -> None:
    """List an organization's teams (or one integration's), a page at a time, by id."""
    from models import TeamStatus
    from worker import cursors

    if status is not None and status not in TeamStatus._value2member_map_:
        fail("invalid", f"--status takes one of {', '.join(TeamStatus)}", as_json)
    if not 1 <= limit <= cursors.MAX_PAGE:
        fail("invalid", f"--limit takes 1 to {cursors.MAX_PAGE}", as_json)
    if cursor is not None:
        try:
            cursors.decode_cursor(cursor)
        except cursors.BadCursor as exc:
            fail("invalid", str(exc), as_json)
    with _client() as client:
        page = client.list_teams(
            org,
            integration_id=integration,
            status=TeamStatus(status) if status else None,
            limit=limit,
            cursor=cursor,
        )
    emit(page, as_json, lambda: _print_teams(page))


@app.command("show")
def team_show(
    team: Annotated[str, typer.Option(help="The team id, such as 2-payments.")],
    as_json: JsonOption = False,
) -> None:
    """Show one team: its status, last check and last error (never its key)."""
    _check_team_id(team, as_json)
    with _client() as client:
        row = client.get_team(team)
    if row is None:
        fail("not_found", "no such team", as_json)
    emit(row, as_json, lambda: console.print(_describe(row), highlight=False))


@app.command("replace-key")
def team_replace_key(
    team: Annotated[str, typer.Option(help="The team id, such as 2-payments.")],
    wait: Annotated[
        float, typer.Option(help="Wait up to this many seconds for the new key's check.")
    ] = 0,
    as_json: JsonOption = False,
) -> None:
    """Replace a team's key, read from standard input (asked for, unechoed, on a
    terminal), and ask for a check of the new key at once."""
    _check_team_id(team, as_json)
    key = _read_key()
    saved = _write(lambda client: client.replace_key(team, key, wait=wait), as_json)
    emit(saved, as_json, lambda: _print_saved(saved, wait))
    check = saved.validation
    if wait > 0 and not (check.is_final or check.is_confirming):
        # The key is saved; its check had no outcome in time: as `ogv validate --wait`.
        raise typer.Exit(ExitCode.TIMED_OUT)


@app.command("remove")
def team_remove(
    team: Annotated[str, typer.Option(help="The team id, such as 2-payments.")],
    as_json: JsonOption = False,
) -> None:
    """Remove a team and its key (its history stays until OGV_HISTORY_RETENTION_DAYS
    prunes it)."""
    _check_team_id(team, as_json)
    removed = _write(lambda client: client.remove_team(team), as_json)
    emit(removed, as_json, lambda: console.print(f"removed team {removed.team_id}"))


def _read_key() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("Integration key (not shown): ").strip()
    return sys.stdin.readline().strip()


def _check_team_id(team: str, as_json: bool) -> None:
    if not is_team_id(team):
        fail(
            "invalid",
            "--team takes a team id, not a label: ids look like 2-payments "
            "(<organization integration id>-<label>); `ogv team list --org N` lists them",
            as_json,
        )


def _client() -> Any:
    """The client the commands write through; the audit log names its writes
    `cli:<os user>`."""
    from models import Requester
    from worker import audit
    from worker.web.client import ValidationClient

    return ValidationClient.from_settings(requested_by=Requester.CLI, actor=audit.cli_actor())


def _write(write: Callable[[Any], Any], as_json: bool) -> Any:
    from worker.errors import RecordError

    try:
        with _client() as client:
            return write(client)
    except RecordError as exc:
        fail(exc.code, str(exc), as_json)


def _describe(row: Any) -> str:
    checked = row.last_checked_at.strftime("%Y-%m-%d %H:%M") if row.last_checked_at else "never"
    error = f", last error {row.last_error_code}" if row.last_error_code else ""
    return (
        f"team {row.team_id} ({row.label}) of integration {row.integration_id} "
        f"({row.account} on {row.platform}): {row.status}, checked {checked}{error}"
    )


def _print_saved(saved: Any, wait: float = 0) -> None:
    check = saved.validation
    console.print(f"replaced the key of team {saved.team.team_id}", highlight=False)
    if check.is_final:
        console.print(f"{check.outcome}: {check.message}", highlight=False)
    elif check.is_confirming:
        console.print(confirming(check), highlight=False)
    elif wait > 0:
        console.print(
            f"check {check.id}: {check.state}, no outcome after {wait}s; "
            f"ogv validate follows it, or GET /v1/validations/{check.id}",
            highlight=False,
        )
    else:
        console.print(f"check {check.id}: {check.state}", highlight=False)


def _print_teams(page: Any) -> None:
    from rich.table import Table

    table = Table("team", "status", "checked")
    table.columns[0].overflow = "fold"
    for row in page.teams:
        checked = row.last_checked_at.strftime("%Y-%m-%d %H:%M") if row.last_checked_at else "-"
        table.add_row(row.team_id, row.status, checked)
    console.print(table)
    if page.next_cursor:
        console.print(f"more: --cursor {page.next_cursor}", highlight=False)
