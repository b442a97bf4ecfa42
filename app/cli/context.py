"""The root options every command shares, and the settings a command loads from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.config import Settings, load_settings
from app.logs import configure_logging


class CliState:
    """Options shared by every command (set by the root callback)."""

    config_file: Path | None = None
    env_file: Path | None = Path(".env")


state = CliState()


def get_settings(**overrides: Any) -> Settings:
    """Load the settings for a command and configure logging from them."""
    settings = load_settings(env_file=state.env_file, config_file=state.config_file, **overrides)
    configure_logging(settings.log.level, secrets=settings.secret_values(), file=settings.log.file)
    return settings


def migrate_database(settings: Settings) -> None:
    """Bring the database up to date; every command that touches the database calls this first."""
    from app.db.migrate import upgrade

    upgrade(settings.database.url)
