"""Option types several commands share, and the parsers of their values."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from app.config import AgentConfig, Settings
from app.domain import ensure_utc, timeframe_to_timedelta
from app.errors import ConfigError

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: ARENA_CONFIG or arena.toml)."),
]
AgentOption = Annotated[
    list[str] | None,
    typer.Option(
        "--agent",
        help="Agent as NAME=PROVIDER:MODEL (repeatable); default: the agents in the config.",
    ),
]
RunOption = Annotated[
    str | None,
    typer.Option("--run", help="Run to show: 'live' (default) or a backtest's run id."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
WideOption = Annotated[
    bool,
    typer.Option(
        "--wide", help="Show every column, however narrow the terminal (default: what fits)."
    ),
]


def parse_time(text: str, *, option: str) -> datetime:
    """Parse an ISO 8601 date or time, UTC unless it names a zone; bad text: `ConfigError`."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not an ISO 8601 date or time; use e.g. 2025-10-17 or "
            "2025-10-17T22:00 (UTC unless it names a zone)"
        ) from None
    return ensure_utc(moment)


def parse_timeframe(text: str, *, option: str) -> str:
    """Check a timeframe such as 5m, 1h or 1d; a bad one is a `ConfigError` naming the option."""
    try:
        timeframe_to_timedelta(text)
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a timeframe: use a positive number and a unit "
            "(m, h, d), e.g. 5m, 1h or 1d"
        ) from None
    return text.strip()


def parse_coins(text: str) -> list[str]:
    """Return the coins of a comma-separated list, upper-cased, blanks dropped."""
    return [item.strip().upper() for item in text.split(",") if item.strip()]


def agents_from(specs: list[str] | None, settings: Settings) -> list[AgentConfig]:
    """Return the agents named by `--agent` specs, or the configured ones when there are none."""
    if not specs:
        return list(settings.agents)
    try:
        agents = [AgentConfig.from_spec(spec) for spec in specs]
    except ValueError as error:
        raise ConfigError(f"--agent: {error}") from None
    names = [agent.name for agent in agents]
    if len(set(names)) != len(names):
        raise ConfigError(f"--agent: agent names must be unique ({', '.join(names)})")
    return agents
