"""`ogv keys`: the Fernet keys that encrypt stored integration keys, and re-encrypting
under the newest one."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from worker.operations.cli.output import ExitCode, JsonOption, console, emit, fail, is_team_id

app = typer.Typer(no_args_is_help=True, help="The encryption keys that protect stored keys.")


@app.command("generate")
def keys_generate() -> None:
    """Print a new Fernet key for OGV_ENCRYPTION_KEYS."""
    from cryptography.fernet import Fernet

    sys.stdout.write(Fernet.generate_key().decode() + "\n")


@app.command("rotate")
def keys_rotate(
    after: Annotated[str, typer.Option(help="Resume after this team id.")] = "",
    batch_size: Annotated[int, typer.Option(help="Teams per transaction.")] = 500,
    force: Annotated[
        bool, typer.Option("--force", help="Rotate even while a live process lacks the new key.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Re-encrypt every stored key under the first key of OGV_ENCRYPTION_KEYS.

    Refused while a live worker or API lacks that key (restart them with it first).
    """
    if after and not is_team_id(after):
        # Never repeated: a key pasted into the wrong option must not reach the terminal.
        fail(
            "invalid",
            "--after takes a team id such as 2-payments: the last one re-encrypted",
            as_json,
        )
    if batch_size < 1:
        fail("invalid", "--batch-size takes 1 or more teams", as_json)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from models.crypto import KeyVault
    from worker import audit
    from worker.celery import app as celery_app
    from worker.database import session_factory
    from worker.operations.rotation import count_teams, readiness, rotate
    from worker.settings import get_settings

    settings = get_settings()
    sessions = session_factory()
    vault = KeyVault(settings.fernet_keys())
    total = count_teams(sessions, after)
    ready = readiness(settings, celery_app, sessions)
    if ready.refusal is not None and not force:
        fail("keys_not_deployed", ready.refusal, as_json)
    if ready.refusal is not None:
        Console(stderr=True, soft_wrap=True).print(
            f"[yellow]warning[/yellow] (--force): {ready.refusal}", highlight=False
        )
    columns = ("{task.description}", BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=Console(stderr=True), disable=as_json) as bar:
        task = bar.add_task("re-encrypting", total=total)
        report = rotate(
            sessions,
            vault,
            after=after,
            batch_size=batch_size,
            progress=lambda done: bar.update(task, completed=done),
        )
    with sessions.begin() as session:
        audit.record(
            session,
            audit.cli_actor(),
            "keys.rotate",
            details={
                "rotated": report.rotated,
                "undecryptable": len(report.undecryptable),
                "after": after or None,
            },
        )
    emit(report, as_json, lambda: _print_rotation(report))
    if report.undecryptable:
        raise typer.Exit(ExitCode.REFUSED)


def _print_rotation(report: Any) -> None:
    console.print(f"re-encrypted {report.rotated} keys")
    for team_id in report.undecryptable:
        console.print(
            f"  team {team_id}: no configured encryption key decrypts its key", highlight=False
        )
