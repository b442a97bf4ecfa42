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
