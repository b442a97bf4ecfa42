"""`arena data`: fill the candle cache from an exchange."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from app.cli.console import print_json, stdout
from app.cli.context import get_settings
from app.cli.options import parse_coins, parse_time, parse_timeframe
from app.cli.views import download_json, download_lines

data_app = typer.Typer(help="Market data: fill the candle cache.", no_args_is_help=True)


@data_app.command("download")
def data_download(
    since: Annotated[
        str, typer.Option("--since", help="First candle time, ISO 8601 (UTC unless zoned).")
    ],
    until: Annotated[
        str | None, typer.Option("--until", help="End time, exclusive, ISO 8601 (default: now).")
    ] = None,
    exchange: Annotated[
        str | None, typer.Option("--exchange", help="ccxt exchange id (default: EXCHANGE_ID).")
    ] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Coins, comma-separated (default: SYMBOLS).")
    ] = None,
    timeframe: Annotated[str, typer.Option("--timeframe", help="Candle timeframe.")] = "1m",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Download closed candles into the database's candle cache, skipping those already there."""
    import asyncio

    from app.cli.progress import download_progress
    from app.wiring import download, open_database

    timeframe = parse_timeframe(timeframe, option="--timeframe")
    start = parse_time(since, option="--since")
    end = parse_time(until, option="--until") if until else datetime.now(UTC)
    settings = get_settings()
    coins = parse_coins(symbols) if symbols else list(settings.symbols)
    database = open_database(settings)
    with download_progress(timeframe) as track:
        results = asyncio.run(
            download(
                settings,
                database,
                coins=coins,
                timeframe=timeframe,
                start=start,
                end=end,
                exchange_id=exchange,
                progress=track,
            )
        )
    if as_json:
        print_json(download_json(results))
        return
    for line in download_lines(results):
        stdout.print(line, highlight=False)
