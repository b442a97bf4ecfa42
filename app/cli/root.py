"""The `arena` typer app: root options, the command tree, and `main`'s exit codes."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from app import __version__
from app.cli.backtest import backtest_command
from app.cli.config import show_config
from app.cli.console import stderr, stdout
from app.cli.context import state
from app.cli.data import data_app
from app.cli.db import db_app
from app.cli.evaluate import evaluate_command
from app.cli.gateway import gateway_command
from app.cli.options import ConfigOption
from app.cli.quota import show_quota
from app.cli.reports import (
    chat_command,
    leaderboard_command,
    positions_command,
    trades_command,
)
from app.cli.run import run_command, start_command
from app.cli.serve import serve_command
from app.early_stop import end_command, hold_stop_signals, release_stop_signals
from app.errors import AppError, ConfigError
from app.logs import mask_secrets

app = typer.Typer(
    name="arena",
    help="Alpha Arena: LLMs trading crypto perpetuals on paper, live and over history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        stdout.print(f"arena {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    config: ConfigOption = None,
    env_file: Annotated[
        Path | None, typer.Option("--env-file", help="Dotenv file to read (default: .env).")
    ] = Path(".env"),
    version: Annotated[
        bool,
        # Eager: the root callback only runs before a command, and `arena --version` has none.
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    state.config_file = config
    state.env_file = env_file


# Help lists the commands in this order, then the groups.
app.command("config")(show_config)
app.command("quota")(show_quota)
app.command("run")(run_command)
app.command("start")(start_command)
app.command("backtest")(backtest_command)
app.command("evaluate")(evaluate_command)
app.command("leaderboard")(leaderboard_command)
app.command("positions")(positions_command)
app.command("trades")(trades_command)
app.command("chat")(chat_command)
app.command("serve")(serve_command)
app.command("gateway")(gateway_command)
app.add_typer(db_app, name="db")
app.add_typer(data_app, name="data")


def _fail(message: str, code: int) -> NoReturn:
    # One line per problem, each marked; the text is shown as is (`[risk]` is not markup).
    for line in mask_secrets(message).splitlines() or [""]:
        stderr.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line on `argv` (default: the process's arguments).

    Exit codes: 2 for a configuration problem (one line saying what to change), 1 for any other
    failure the project reports (`app.errors.AppError`, database errors included) or an OS error,
    130 when interrupted. The adapters translate library errors, so nothing else is caught here.
    """
    hold_stop_signals(list(argv) if argv is not None else sys.argv[1:])
    try:
        _run(argv)
    except SystemExit as exit_:
        end_command(exit_.code)
        raise
    finally:
        release_stop_signals()


def _run(argv: Sequence[str] | None) -> None:
    try:
        app(args=list(argv) if argv is not None else None)
    except ConfigError as error:
        _fail(str(error), 2)
    except AppError as error:
        _fail(str(error), 1)
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        _fail(f"{error.strerror or error}{where}", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
