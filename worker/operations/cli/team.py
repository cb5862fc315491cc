"""`ogv team`: store one team's integration key, or import many.

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

from worker.operations.cli.output import ExitCode, JsonOption, console, emit, fail

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
    as_json: JsonOption = False,
) -> None:
    """Add teams in bulk from JSON lines: all of them, or none if a line is refused.

    Every refused line is reported by number; the keys never appear in the output.
    """
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
        )
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
        console.print(f"imported {report.imported} teams, {refused} lines refused")
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
