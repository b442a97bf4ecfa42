"""`arena backtest`: replay history through the live cycle code."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from app.cli.console import print_json, stderr, stdout
from app.cli.context import get_settings
from app.cli.options import (
    AgentOption,
    WideOption,
    agents_from,
    parse_coins,
    parse_time,
    parse_timeframe,
)
from app.cli.views import leaderboard_table
from app.domain import LlmMode
from app.errors import ConfigError


def backtest_command(
    data: Annotated[
        list[Path],
        typer.Option(
            "--data",
            help="Candle files or folders (funding and mark files by name), "
            "or cache:EXCHANGE for the candles `arena data download` stored.",
        ),
    ],
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Coins, e.g. BTC,ETH (names files in order).")
    ] = None,
    start: Annotated[str | None, typer.Option("--start", help="First cycle (ISO, UTC).")] = None,
    end: Annotated[str | None, typer.Option("--end", help="Last cycle (ISO, UTC).")] = None,
    interval: Annotated[
        str | None, typer.Option("--interval", help="Cadence, e.g. 5m (default: the config's).")
    ] = None,
    agent: AgentOption = None,
    llm_mode: Annotated[
        LlmMode | None,
        typer.Option(
            "--llm-mode",
            help="cached (default): call only for prompts not answered before; "
            "replay: never call a model; live: always call.",
        ),
    ] = None,
    replay_run: Annotated[
        str | None,
        typer.Option(
            "--replay-run",
            metavar="RUN_ID",
            help="Replay that recorded run exactly: each answer and failure from its own calls, "
            "not from the answer cache (implies --llm-mode replay; give the run's window, "
            "interval and agents).",
        ),
    ] = None,
    cash: Annotated[float, typer.Option("--cash", help="Starting cash per agent, USD.")] = 10_000.0,
    fee_bps: Annotated[
        float | None, typer.Option("--fee-bps", help="Taker fee (default: RISK_FEE_BPS).")
    ] = None,
    slippage_bps: Annotated[
        float | None, typer.Option("--slippage-bps", help="Slippage (default: RISK_SLIPPAGE_BPS).")
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print only the summary, as one JSON object."),
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write chart, trades and summary here.")
    ] = None,
    wide: WideOption = False,
) -> None:
    """Replay history through the same cycle code, with cached LLM answers."""
    import asyncio

    from app.backtest import BacktestOptions
    from app.cli.progress import RichProgress
    from app.wiring import open_database, run_backtest

    settings = get_settings()
    if cash <= 0:
        raise ConfigError(f"--cash must be positive, got {cash}")
    for option, value in (("--fee-bps", fee_bps), ("--slippage-bps", slippage_bps)):
        if value is not None and not 0 <= value < 1000:
            raise ConfigError(f"{option} must be between 0 and 1000 basis points, got {value}")
    options = BacktestOptions(
        data=tuple(data),
        agents=tuple(agents_from(agent, settings)),
        symbols=tuple(parse_coins(symbols)) if symbols else None,
        start=parse_time(start, option="--start") if start is not None else None,
        end=parse_time(end, option="--end") if end is not None else None,
        interval=parse_timeframe(interval, option="--interval") if interval is not None else None,
        llm_mode=llm_mode or (LlmMode.REPLAY if replay_run else LlmMode.CACHED),
        replay_run=replay_run,
        cash_usd=cash,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        report_dir=report,
    )
    database = open_database(settings)
    result = asyncio.run(
        run_backtest(settings, options, database=database, progress=RichProgress())
    )
    if as_json:
        print_json(result.summary)
        return
    title = (
        f"Backtest {result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC, "
        f"{', '.join(result.symbols)}, every {result.interval} ({result.cycles:,} cycles)"
    )
    if result.synthetic:
        title = f"SYNTHETIC DATA, NOT MARKET PRICES. {title}"
    stdout.print(
        leaderboard_table(
            result.rows,
            title=title,
            hodl_pct=result.buy_and_hold_return_pct,
            wide=wide,
            synthetic=result.synthetic,
        )
    )
    stderr.print(
        f"{result.funding_note}. Run id {result.run_id} (arena leaderboard --run "
        f"{result.run_id}); {result.cycles / max(result.elapsed_s, 1e-9):,.0f} cycles/s."
    )
    if result.data_note:
        stderr.print(result.data_note, markup=False, highlight=False)
    if report is not None:
        stderr.print(f"report written to {report}/ (account_value.png, trades.csv, summary.json)")
