"""`ogv`: the command line of the service. Every command takes `--json` for scripts.

Keys are read from standard input, never from argv (argv is visible to every
user of the machine through `ps`), and no command prints one.

One module per command group; `output` holds what they all print with. Each
command imports what it needs (SQLAlchemy, settings, Celery, aiohttp...) inside
itself: `ogv --help` and `ogv status` start without the rest (bench/startup.py),
so every module here stays cheap to import.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from worker.operations.cli import (
    changes,
    checks,
    db,
    health,
    integration,
    keys,
    migration,
    serve,
    team,
)
from worker.operations.cli.output import ExitCode

app = typer.Typer(no_args_is_help=True, help="Validate stored Opsgenie integration keys.")
# Top-level commands first, then the groups: the order `ogv --help` lists them in.
for commands in (checks.app, serve.app, health.app):
    app.add_typer(commands)
app.add_typer(db.app, name="db")
app.add_typer(integration.app, name="integration")
app.add_typer(team.app, name="team")
app.add_typer(keys.app, name="keys")
app.add_typer(migration.app, name="migration")
app.add_typer(changes.app, name="changes")


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        sys.stdout.write(version("opsgenie-validator") + "\n")
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    pass


def main() -> None:
    """`ogv`: what an operator can act on is one line (`--json`: `{"error": ...}`), not a
    traceback; `OGV_LOG_LEVEL=DEBUG` keeps the traceback."""
    try:
        app()
    except Exception as exc:
        # Imported only now: it knows the errors of SQLAlchemy, pydantic, kombu and Redis.
        from worker.operations.failures import explain

        refusal = explain(exc)
        if refusal is None or os.environ.get("OGV_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        if "--json" in sys.argv[1:]:
            sys.stdout.write(json.dumps(refusal.as_json()) + "\n")
        else:
            sys.stderr.write(refusal.as_line() + "\n")
        sys.exit(ExitCode.REFUSED)
