"""`ogv`: the command line of the service. Every command takes `--json` for scripts.

Keys are read from standard input, never from argv (argv is visible to every
user of the machine through `ps`), and no command prints one.

One module per command group; `output` holds what they all print with. Each
command imports what it needs (SQLAlchemy, settings, Celery, aiohttp...) inside
itself: `ogv --help` and `ogv status` start without the rest (bench/startup.py),
so every module here stays cheap to import.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from worker.operations.cli import (
    audit,
    changes,
    checks,
    db,
    health,
    integration,
    keys,
    migration,
    serve,
    team,
    tokens,
)
from worker.operations.cli.output import ExitCode, refuse_in_one_line

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
app.add_typer(tokens.app, name="tokens")
app.add_typer(audit.app, name="audit")


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


INT64_MAX = 2**63 - 1
"""The largest integer any option takes: a BIGINT column's (`models.integration.BIGINT_MAX`,
not imported here: it would load SQLAlchemy into `ogv --help`)."""
INT64_MIN = -INT64_MAX - 1


IDS = frozenset({"org", "integration"})
"""Parameters that name a row: ids start at 1."""
SECONDS = frozenset({"wait", "timeout", "window"})
"""Parameters that are a duration: 0 or more seconds."""


def bound_integers(command: Any) -> Any:
    """Make every command under `command` refuse, before it runs, an integer past 64
    bits, an id below 1, a number that is not finite and a negative duration in any of
    its parameters: a usage error, not an overflow deep in a database driver nor a
    check queued for organization -1."""
    if command.callback is not None:
        flags = {p.name: (p.opts or [p.name])[0] for p in command.params}
        command.callback = _within_bounds(command.callback, flags)
    for sub in getattr(command, "commands", {}).values():
        bound_integers(sub)
    return command


def _within_bounds(callback: Callable[..., Any], flags: dict[str, str]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def checked(**params: Any) -> Any:
        for name, value in params.items():
            values = value if isinstance(value, list | tuple) else [value]
            for v in values:
                problem = _out_of_bounds(name, v)
                if problem is not None:
                    raise typer.BadParameter(problem, param_hint=f"'{flags.get(name, name)}'")
        return callback(**params)

    return checked


def _out_of_bounds(name: str, value: Any) -> str | None:
    if type(value) is int and not INT64_MIN <= value <= INT64_MAX:
        return f"must be an integer from {INT64_MIN} to {INT64_MAX}"
    if type(value) is int and name in IDS and value < 1:
        return "must be an id: a whole number from 1"
    if type(value) is float and not math.isfinite(value):
        return "must be a finite number"
    if type(value) is float and name in SECONDS and value < 0:
        return "must be 0 or more seconds"
    return None


def main() -> None:
    """`ogv`: what an operator can act on is one line (`--json`: `{"error": ...}`), not a
    traceback; `OGV_LOG_LEVEL=DEBUG` keeps the traceback. So is a usage error (an unknown
    option, a value of the wrong type or past 64 bits)."""
    as_json = "--json" in sys.argv[1:]
    try:
        done = bound_integers(typer.main.get_command(app)).main(
            prog_name="ogv", standalone_mode=False
        )
    except typer.Abort:
        sys.exit(ExitCode.REFUSED)
    except typer.TyperException as exc:  # click's usage errors, as typer vendors them
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        refuse_in_one_line(
            "invalid_usage", message, as_json, getattr(exc, "exit_code", ExitCode.TIMED_OUT)
        )
    except Exception as exc:
        # Imported only now: it knows the errors of SQLAlchemy, pydantic, kombu and Redis.
        from worker.operations.failures import explain

        refusal = explain(exc)
        if refusal is None or os.environ.get("OGV_LOG_LEVEL", "").upper() == "DEBUG":
            raise
        if as_json:
            sys.stdout.write(json.dumps(refusal.as_json()) + "\n")
        else:
            sys.stderr.write(refusal.as_line() + "\n")
        sys.exit(ExitCode.REFUSED)
    sys.exit(done if isinstance(done, int) else ExitCode.OK)
