"""`arena db`: database maintenance."""

from __future__ import annotations

import typer

from app.cli.console import stderr
from app.cli.context import get_settings, migrate_database

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database if needed and migrate it to the latest schema."""
    from app.db.session import safe_url

    settings = get_settings()
    migrate_database(settings)
    stderr.print(f"database is up to date: {safe_url(settings.database.url)}")


@db_app.command("copy")
def db_copy(
    source: str = typer.Option(..., "--from", help="The database URL to copy from."),
    target: str = typer.Option(..., "--to", help="The database URL to copy into."),
    run: str | None = typer.Option(None, "--run", help="Copy only this run (e.g. live)."),
    force: bool = typer.Option(
        False, "--force", help="Replace what the target already holds (the arena or the run)."
    ),
) -> None:
    """Copy an arena (every run, or --run) between databases, e.g. SQLite to PostgreSQL.

    The target is migrated first; a target already holding the arena (or the run) is refused
    without --force. Each table's rows are counted and checksummed on both sides at the end.
    """
    from app.cli.progress import copy_progress
    from app.db.copy import copy_arena
    from app.db.session import safe_url

    get_settings()
    with copy_progress() as progress:
        reports = copy_arena(source, target, run=run, force=force, progress=progress)
    rows = sum(report.rows for report in reports)
    stderr.print(
        f"row counts and checksums match: copied {rows} rows in {len(reports)} tables to "
        f"{safe_url(target)}",
        soft_wrap=True,
    )
