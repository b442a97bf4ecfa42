"""The `arena` command line (also `python -m app`). Thin: commands build through `app.wiring`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from app import __version__
from app.config import Settings, load_settings
from app.errors import AppError, ConfigError
from app.logs import configure_logging, mask_secrets

app = typer.Typer(
    name="arena",
    help="Alpha Arena: LLMs trading crypto perpetuals on paper, live and over history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

stdout = Console()
stderr = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: ARENA_CONFIG or arena.toml)."),
]


class CliState:
    """Options shared by every command."""

    config_file: Path | None = None
    env_file: Path | None = Path(".env")


state = CliState()


@app.callback()
def _root(
    config: ConfigOption = None,
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="Dotenv file to read (default: .env).")
    ] = Path(".env"),
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        stdout.print(f"arena {__version__}")
        raise typer.Exit(0)
    state.config_file = config
    state.env_file = env_file


def get_settings(**overrides: Any) -> Settings:
    """Load the settings for a command and configure logging from them."""
    settings = load_settings(env_file=state.env_file, config_file=state.config_file, **overrides)
    configure_logging(settings.log.level, secrets=settings.secret_values(), file=settings.log.file)
    return settings


def migrate_database(settings: Settings) -> None:
    """Bring the database up to date; every command that touches the database calls this first."""
    from app.db.migrate import upgrade

    upgrade(settings.database.url)


def print_json(payload: Any) -> None:
    """Print exactly one JSON document on stdout."""
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
    sys.stdout.flush()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database if needed and migrate it to the latest schema."""
    settings = get_settings()
    migrate_database(settings)
    stderr.print(f"database is up to date: {settings.database.url}")


@app.command("config")
def show_config(
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Check the settings and print them (secrets masked)."""
    settings = get_settings()
    payload = settings.model_dump(mode="json")
    for provider in ("modelscope", "deepseek", "dashscope", "openai"):
        key = settings.provider_settings(provider).api_key
        payload[provider]["api_key"] = "set" if key is not None else None
    if as_json:
        print_json(payload)
        return
    stdout.print_json(data=payload)


def _fail(message: str, code: int) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {mask_secrets(message)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def main() -> None:
    """Run the command line; a configuration problem exits 2 with one line per problem."""
    try:
        app()
    except ConfigError as error:
        _fail(str(error), 2)
    except AppError as error:
        _fail(str(error), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
