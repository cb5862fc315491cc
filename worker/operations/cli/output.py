"""What every `ogv` command prints: a table for people or JSON for scripts
(`--json`), a refusal as one line in either, and the exit codes."""

from __future__ import annotations

import dataclasses
import json
import sys
import uuid
from collections.abc import Callable, Iterable, Sequence
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


def emit_listing(
    head: dict[str, Any], name: str, items: Iterable[Any], tail: dict[str, Any]
) -> None:
    """Write `{**head, name: [*items], **tail}` as `emit` would, one item at a time:
    a listing of a million teams is never held whole. `tail` is read once the items
    are written, so it may be filled in while they are."""
    out = sys.stdout
    out.write("{\n")
    for key, value in head.items():
        out.write(f"  {json.dumps(key)}: {_indented(value)},\n")
    out.write(f"  {json.dumps(name)}: [")
    written = 0
    for item in items:
        out.write(("," if written else "") + "\n    " + _indented(item, 4))
        written += 1
    out.write("\n  ]" if written else "]")
    for key, value in tail.items():
        out.write(f",\n  {json.dumps(key)}: {_indented(value)}")
    out.write("\n}\n")


def _indented(value: Any, depth: int = 2) -> str:
    return json.dumps(_jsonable(value), indent=2).replace("\n", "\n" + " " * depth)


ELLIPSIS = "…"


def clip(text: str, width: int) -> str:
    """`text` as one line of at most `width` cells: its lines joined, runs of blanks
    made one, what a terminal would obey shown as U+FFFD, and cut with an ellipsis."""
    from rich.cells import cell_len, set_cell_size

    line = "".join(c if c.isprintable() else "\ufffd" for c in " ".join(text.split()))
    if cell_len(line) <= width:
        return line
    return set_cell_size(line, width - 1) + ELLIPSIS if width > 0 else ""


def one_line_rows(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    width: int,
    give_way: Sequence[tuple[int, int]],
) -> list[str]:
    """The header and rows as lines of at most `width` cells, one per row.

    When they would be wider, columns give way in the order of `give_way`, each pair
    a column's number and the width it may shrink to (never below its header's);
    what no longer fits ends in an ellipsis.
    """
    from rich.cells import cell_len, set_cell_size

    lines = [header, *rows]
    widths = [max(cell_len(clip(line[n], 10**6)) for line in lines) for n in range(len(header))]
    excess = sum(widths) + 2 * (len(widths) - 1) - width
    for n, floor in give_way:
        cut = max(0, min(excess, widths[n] - max(floor, cell_len(header[n]))))
        widths[n] -= cut
        excess -= cut
    return [
        "  ".join(
            set_cell_size(clip(cell, w), w) for cell, w in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    ]


NARROWING = ((3, 24), (0, 24), (3, 0), (0, 0))
"""How a team's line gives way (`one_line_rows`): its last column, then its first,
down to 24 cells each, then to their headers."""


def fail(code: str, message: str, as_json: bool, exit_code: int = ExitCode.REFUSED) -> NoReturn:
    """Report a refused command the same way in both output modes, and exit."""
    if as_json:
        sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    else:
        Console(stderr=True, soft_wrap=True).print(
            f"[red]error[/red] ({code}): {message}", highlight=False
        )
    raise typer.Exit(exit_code)


def refuse_in_one_line(code: str, message: str, as_json: bool, exit_code: int) -> NoReturn:
    """A refusal from outside any command (a usage error): one line, then exit."""
    if as_json:
        sys.stdout.write(json.dumps({"error": {"code": code, "message": message}}) + "\n")
    else:
        sys.stderr.write(f"error ({code}): {message}\n")
    sys.exit(exit_code)


def confirming(view: Any) -> str:
    """What a `confirming` check waits for, in words: its second check, and when."""
    due = f"{view.second_check_at:%Y-%m-%d %H:%M:%S} UTC" if view.second_check_at else "soon"
    return f"confirming: the second check at {due} must agree"


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
