"""`arena leaderboard`, `positions`, `trades` and `chat`: what a run recorded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from app.cli.console import print_json, stderr, stdout
from app.cli.context import get_settings
from app.cli.options import JsonOption, RunOption, WideOption
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
    from app.db.queries import ChatEntry, SentImage
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


def leaderboard_command(
    run: RunOption = None, as_json: JsonOption = False, wide: WideOption = False
) -> None:
    """Rank the agents of a run by account value."""
    from app.reports import is_synthetic_run, leaderboard

    database = _open_existing(get_settings())
    run_id = _pick_run(database.engine, run)
    rows = leaderboard(database.engine, run_id)
    synthetic = is_synthetic_run(run_id)
    if as_json:
        print_json(leaderboard_json(run_id, rows, synthetic=synthetic))
        return
    title = f"Leaderboard ({run_id})"
    if synthetic:
        title += ": SYNTHETIC data (a seeded random walk, not market prices)"
    stdout.print(
        leaderboard_table(rows, title=title, hodl_pct=None, wide=wide, synthetic=synthetic)
    )


def positions_command(
    run: RunOption = None, as_json: JsonOption = False, wide: WideOption = False
) -> None:
    """Show every agent's open positions with their exit plans, price and unrealized PnL."""
    from app.db import queries
    from app.wiring import last_prices

    settings = get_settings()
    database = _open_existing(settings)
    run_id = _pick_run(database.engine, run)
    items = [
        (agent.name, position)
        for agent in queries.agents(database.engine, run_id)
        for position in queries.open_positions(database.engine, agent.agent_id)
    ]
    prices: dict[str, float] = {}
    note = "price and uPnL are shown for the live run (the last candle the daemon cached)"
    if run_id == "live" and items:
        known = last_prices(settings, database, coins=sorted({p.coin for _, p in items}))
        prices = {coin: price for coin, (price, _at) in known.items()}
        if known:
            newest = max(at for _price, at in known.values())
            note = (
                f"price: the last closed candle cached from {settings.exchange.id}, "
                f"{newest:%Y-%m-%d %H:%M} UTC"
            )
    if as_json:
        print_json(positions_json(items, prices))
        return
    if not items:
        stdout.print(f"no open positions in run {run_id}")
        return
    stdout.print(positions_table(run_id, items, prices=prices, prices_note=note, wide=wide))


def trades_command(
    run: RunOption = None,
    limit: Annotated[int, typer.Option("--limit", help="Most recent trades to show.")] = 50,
    as_json: JsonOption = False,
    wide: WideOption = False,
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
    stdout.print(trades_table(run_id, items, wide=wide))


def write_call_images(
    by_call: Mapping[int, Sequence[SentImage]], entries: Sequence[ChatEntry], folder: Path
) -> dict[tuple[int, int], Path]:
    """Write what each call's model saw: `AGENT-YYYYMMDDTHHMM-call<ID>-<N>-<KIND>.png`.

    Returns each file by (call id, position of the image in the prompt).
    """
    if not any(by_call.get(e.call_id) for e in entries if e.call_id is not None):
        return {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot write images to {folder}: {error}") from error
    written: dict[tuple[int, int], Path] = {}
    for entry in entries:
        if entry.call_id is None:
            continue
        for image in by_call.get(entry.call_id, []):
            name = (
                f"{entry.agent}-{entry.at:%Y%m%dT%H%M}-call{entry.call_id}-"
                f"{image.position + 1}-{image.kind}.png"
            )
            path = folder / name
            path.write_bytes(image.png)
            written[(entry.call_id, image.position)] = path
    return written


def chat_command(
    run: RunOption = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    coin: Annotated[
        str | None, typer.Option("--coin", help="Only calls that decided on this coin.")
    ] = None,
    outcome: Annotated[
        str | None,
        typer.Option(
            "--outcome",
            help="Only calls with this outcome (ok, parse_error, error...) or with a decision "
            "that was executed, rejected or held.",
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Calls per agent.")] = 5,
    prompt: Annotated[
        bool, typer.Option("--prompt", help="Show the messages each call was sent, in full.")
    ] = False,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="Write the chart images each shown call sent (a vision agent's) as PNG files "
            "into this folder (with --json, each image names its file).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Show each agent's recent calls: reasoning summary, decisions in full and their outcome."""
    from app.db import queries

    database = _open_existing(get_settings())
    run_id = _pick_run(database.engine, run)
    if agent is not None and agent not in {a.name for a in queries.agents(database.engine, run_id)}:
        raise ConfigError(f"no agent {agent!r} in run {run_id}")
    entries = queries.recent_chat(
        database.engine, run_id, agent=agent, limit=limit, coin=coin, outcome=outcome
    )
    details = queries.decision_details(
        database.engine, [e.cycle_id for e in entries if e.cycle_id is not None]
    )
    prompts = (
        {e.call_id: queries.call_messages(database.engine, e.call_id) for e in entries if e.call_id}
        if prompt
        else None
    )
    sent = (
        queries.call_images(database.engine, [e.call_id for e in entries if e.call_id is not None])
        if images is not None or as_json
        else {}
    )
    written: dict[tuple[int, int], Path] = {}
    if images is not None:
        written = write_call_images(sent, entries, images)
        # On stderr: `--json` keeps stdout one JSON document.
        stderr.print(f"wrote {len(written)} chart image(s) to {images}")
    if as_json:
        print_json(chat_json(entries, details, prompts, images=sent, files=written, run_id=run_id))
        return
    if not entries:
        wanted = " matching the filters" if coin or outcome else ""
        stdout.print(f"no model calls{wanted} recorded in run {run_id}")
        return
    print_chat(stdout, entries, details, prompts, coin=coin)
