"""`ogv db`: the database schema."""

from __future__ import annotations

import typer

from worker.operations.cli.output import JsonOption, console, emit

app = typer.Typer(no_args_is_help=True, help="The database schema.")


@app.command("upgrade")
def db_upgrade(as_json: JsonOption = False) -> None:
    """Create or migrate the schema to the newest revision."""
    from models.db import require_sqlite_database
    from models.migrate import upgrade
    from worker.settings import get_settings

    settings = get_settings()
    if not settings.is_embedded:  # a mistyped SQLite path is refused, not created
        require_sqlite_database(settings.effective_database_url, creating=True)
    applied = upgrade(settings.effective_database_url)
    emit(
        {"applied": applied},
        as_json,
        lambda: console.print(
            f"applied {', '.join(applied)}: the schema is up to date"
            if applied
            else "the schema was already up to date"
        ),
    )
