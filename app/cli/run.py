"""`arena run` (the live arena) and `arena start` (live with a key, else the first look)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from app.cli.console import stderr, stdout
from app.cli.context import get_settings
from app.cli.options import AgentOption, WideOption, agents_from, parse_time
from app.cli.views import leaderboard_table
from app.config import Settings
from app.early_stop import release_stop_signals
from app.errors import ConfigError

# Said after the first look: how to go from the offline baselines to a model trading.
NEXT_STEPS = (
    "\nTo let a model trade:\n"
    "  1. cp .env.example .env   and put your ModelScope token after MODELSCOPE_API_KEY=\n"
    "     (https://modelscope.cn/my/myaccesstoken; DeepSeek, DashScope and any\n"
    "     OpenAI-compatible server work too, see README)\n"
    "  2. .venv/bin/python scripts/test_modelscope.py   checks the key with one call\n"
    "  3. bash scripts/run.sh   starts the live arena (arena run)\n"
    "Backtest models on more history:\n"
    "  arena data download --exchange binanceusdm --timeframe 5m --since 2025-10-01\n"
    "  arena backtest --data cache:binanceusdm --agent NAME=PROVIDER:MODEL"
)


def run_command(
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit.")] = False,
    at: Annotated[
        str | None,
        typer.Option("--at", help="With --once: the scheduled time to run (ISO, UTC)."),
    ] = None,
    agent: AgentOption = None,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Do not serve the dashboard (SERVE_HOST/PORT).")
    ] = False,
) -> None:
    """Run the live arena: a decision cycle every interval, exits checked in between."""
    import asyncio

    from app.wiring import run_arena

    settings = get_settings()
    if at is not None and not once:
        raise ConfigError("--at needs --once (the daemon always runs on the clock)")
    replay_at = parse_time(at, option="--at") if at is not None else None
    if replay_at is not None and replay_at > datetime.now(UTC):
        raise ConfigError(
            f"--at {at} is in the future: --once --at replays a past cycle; "
            "use --once alone for the current one"
        )
    agents = agents_from(agent, settings)
    code = asyncio.run(run_arena(settings, agents, once=once, at=replay_at, serve=not no_serve))
    raise typer.Exit(code)


def start_command(
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Candle files or folders for the first look (no download)."),
    ] = None,
    wide: WideOption = False,
) -> None:
    """The main job: the live arena when a model key is set, else a first look at the baselines."""
    import asyncio

    settings = get_settings()

    from app.wiring import llm_agents, missing_keys, run_arena

    agents = list(settings.agents)
    lacking = {name for names in missing_keys(settings, agents).values() for name in names}
    if any(agent.name not in lacking for agent in llm_agents(agents)):
        raise typer.Exit(asyncio.run(run_arena(settings, agents, serve=True)))
    # Not the daemon after all: a stop asked from now on (or already) ends the first look.
    release_stop_signals()
    _first_look(settings, data, wide=wide)


def _first_look(settings: Settings, data: list[Path] | None, *, wide: bool) -> None:
    """Backtest the baselines on recent candles and say how to bring a model in."""
    import asyncio

    from app.cli.progress import RichProgress, download_progress
    from app.first_look import FIRST_LOOK_TIMEFRAME, FirstLookData, first_look_data
    from app.market.sample import is_synthetic
    from app.wiring import open_database, run_backtest

    database = open_database(settings)
    stderr.print(
        "[bold]No model API key is set[/], so this is a first look: the two rule-based "
        "baselines (buy_and_hold, ema_trend) backtest the last two weeks of candles.",
        highlight=False,
    )
    if data:
        source = FirstLookData(
            data=tuple(data),
            label=", ".join(str(path) for path in data),
            synthetic=is_synthetic(data),
        )
    else:
        stderr.print(
            f"Downloading {FIRST_LOOK_TIMEFRAME} candles of {', '.join(settings.symbols)} from "
            f"{settings.exchange.id} (public data, no key; cached for the next time)...",
            highlight=False,
        )
        with download_progress(FIRST_LOOK_TIMEFRAME) as track:
            source = asyncio.run(
                first_look_data(settings, database, now=datetime.now(UTC), progress=track)
            )
    for note in source.notes:
        stderr.print(note, highlight=False)
    result = asyncio.run(
        run_backtest(settings, source.options(settings), database=database, progress=RichProgress())
    )
    title = (
        f"First look on {source.label}: {result.start:%Y-%m-%d %H:%M} to "
        f"{result.end:%Y-%m-%d %H:%M} UTC, every {result.interval}"
    )
    if result.synthetic and "SYNTHETIC" not in source.label:
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
    stdout.print(see_it_again(result.run_id), highlight=False)
    stdout.print(NEXT_STEPS, highlight=False)
    stdout.print(
        f"See this run in the dashboard: arena serve --run {result.run_id}  "
        f"(then open http://{settings.serve.host}:{settings.serve.port}/?run={result.run_id})",
        highlight=False,
    )


def see_it_again(run_id: str) -> str:
    """Return the lines that give a run's id and the commands that show it again."""
    return (
        f"\nRun id: {run_id}\n"
        f"  arena leaderboard --run {run_id}   the table above\n"
        f"  arena trades --run {run_id}        every closed trade\n"
        f"  arena positions --run {run_id}     what is still open\n"
        f"  arena chat --run {run_id}          what the agents decided (models' runs)\n"
        f"  arena serve --run {run_id}         the same in a browser (the dashboard)"
    )
