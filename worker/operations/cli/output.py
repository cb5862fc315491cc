"""What every `ogv` command prints: a table for people or JSON for scripts
(`--json`), a refusal as one line in either, and the exit codes."""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

console = Console(soft_wrap=True)  # a line of output stays one line, at any width
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class ExitCode:
    OK = 0
    REFUSED = 1
    TIMED_OUT = 2
    UNHEALTHY = 3


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, date):  # a datetime too
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def emit(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(_jsonable(data), indent=2) + "\n")
    else:
        render()


def fail(code: str, message: str, as_json: bool, exit_code: int = ExitCode.REFUSED) -> NoReturn:
    """Report a refused command the same way in both output modes, and exit."""
    if as_json:
        sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    else:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error[/red] ({code}): {message}", highlight=False
        )
    raise typer.Exit(exit_code)


def is_team_id(text: str) -> bool:
    """Whether `text` has the shape of a team id (`models.Team.make_id`), such as
    2-payments, rather than a label or a key pasted into the wrong option."""
    import re

    from models.integration import TEAM_ID_MAX, TEAM_ID_PATTERN

    return len(text) <= TEAM_ID_MAX and re.fullmatch(TEAM_ID_PATTERN, text) is not None


def log_events(settings: Any) -> None:
    """Send log events (`integration.migrated`, `team.status_changed`) to stderr, unless
    the host process (a test runner) configured logging already."""
    import logging

    from worker.logs import configure_logging

    if not logging.getLogger().handlers:
        configure_logging(settings.log_level, settings.log_format)
