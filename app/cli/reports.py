"""`arena leaderboard`, `positions`, `trades` and `chat`: what a run recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.console import print_json, stdout
from app.cli.context import get_settings
from app.cli.options import JsonOption, RunOption
from app.cli.views import (
    chat_json,
    leaderboard_json,
    leaderboard_table,
    positions_json,
    positions_table,
    print_chat,
    trades_json,
    trades_table,
)
from app.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.config import Settings
    from app.db.session import Database


def _open_existing(settings: Settings) -> Database:
    from app.wiring import open_database

    return open_database(settings)


def _pick_run(engine: Engine, run: str | None) -> str:
    from app.db import queries

    runs = queries.run_ids(engine)
    chosen = run or "live"
    if chosen not in runs:
        known = ", ".join(runs[:10]) if runs else "none yet"
        raise ConfigError(
            f"no run {chosen!r} in the database (runs: {known}); start one with "
            "`arena run` or `arena backtest`"
        )
    return chosen


def leaderboard_command(run: RunOption = None, as_json: JsonOption = False) -> None:
    """Rank the agents of a run by account value."""
    from app.reports import leaderboard

    database = _open_existing(get_settings())
    run_id = _pick_run(database.engine, run)
    rows = leaderboard(database.engine, run_id)
    if as_json:
        print_json(leaderboard_json(run_id, rows))
        return
    stdout.print(leaderboard_table(rows, title=f"Leaderboard ({run_id})", hodl_pct=None))


def positions_command(run: RunOption = None, as_json: JsonOption = False) -> None:
    """Show every agent's open positions with their exit plans."""
    from app.db import queries

    database = _open_existing(get_settings())
    run_id = _pick_run(database.engine, run)
    items = [
        (agent.name, position)
        for agent in queries.agents(database.engine, run_id)
        for position in queries.open_positions(database.engine, agent.agent_id)
    ]
    if as_json:
        print_json(positions_json(items))
        return
    if not items:
        stdout.print(f"no open positions in run {run_id}")
        return
    stdout.print(positions_table(run_id, items))


def trades_command(
    run: RunOption = None,
    limit: Annotated[int, typer.Option("--limit", help="Most recent trades to show.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Show the closed trades (entry, exit, fees, funding, PnL, holding time)."""
    from app.db import queries

    database = _open_existing(get_settings())
    run_id = _pick_run(database.engine, run)
    items = [
        (agent.name, trade)
        for agent in queries.agents(database.engine, run_id)
        for trade in queries.closed_trades(database.engine, agent.agent_id)
    ]
    items.sort(key=lambda item: item[1].closed_at, reverse=True)
    items = items[:limit]
    if as_json:
        print_json(trades_json(items))
        return
    if not items:
        stdout.print(f"no closed trades in run {run_id}")
        return
    stdout.print(trades_table(run_id, items))


def chat_command(
    run: RunOption = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Calls per agent.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Show each agent's recent calls: time, reasoning summary, decisions and their outcome."""
    from app.db import queries

    database = _open_existing(get_settings())
    run_id = _pick_run(database.engine, run)
    entries = queries.recent_chat(database.engine, run_id, agent=agent, limit=limit)
    if as_json:
        print_json(chat_json(entries))
        return
    if not entries:
        stdout.print(f"no model calls recorded in run {run_id}")
        return
    print_chat(stdout, entries)
