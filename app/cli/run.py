"""`arena run` (the live arena) and `arena start` (live with a key, else an offline first look)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from app.cli.console import stderr, stdout
from app.cli.context import get_settings
from app.cli.options import AgentOption, agents_from, parse_time
from app.cli.views import leaderboard_table
from app.config import AgentConfig, Settings
from app.domain import LlmMode
from app.errors import ConfigError

# Said after the first look: how to go from the offline baselines to a model trading.
NEXT_STEPS = (
    "\nTo let a model trade:\n"
    "  1. cp .env.example .env   and put your ModelScope token after MODELSCOPE_API_KEY=\n"
    "     (https://modelscope.cn/my/myaccesstoken; DeepSeek, DashScope and any\n"
    "     OpenAI-compatible server work too, see README)\n"
    "  2. .venv/bin/python scripts/test_modelscope.py   checks the key with one call\n"
    "  3. bash scripts/run.sh   starts the live arena (arena run)\n"
    "Backtest models on history: arena backtest --data PATH --agent NAME=PROVIDER:MODEL"
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
        typer.Option("--data", help="Candle files or folders for the offline first look."),
    ] = None,
) -> None:
    """The main job: the live arena when a model key is set, else an offline first look."""
    import asyncio

    from app.wiring import llm_agents, missing_keys, run_arena

    settings = get_settings()
    agents = list(settings.agents)
    lacking = {name for names in missing_keys(settings, agents).values() for name in names}
    if any(agent.name not in lacking for agent in llm_agents(agents)):
        raise typer.Exit(asyncio.run(run_arena(settings, agents, serve=True)))
    _first_look(settings, data)


def _first_look(settings: Settings, data: list[Path] | None) -> None:
    """Backtest the baselines offline and say how to bring a model in."""
    import asyncio

    from app.backtest import BacktestOptions
    from app.cli.progress import RichProgress
    from app.market.sample import SAMPLE_LABEL, write_sample_data
    from app.wiring import open_database, run_backtest

    paths, label = _first_look_data(data)
    stderr.print(
        "[bold]No model API key is set[/], so this is an offline first look: the two "
        f"rule-based baselines replay the last two weeks of {label}.",
        highlight=False,
    )
    if paths is None:
        paths = [write_sample_data(Path("data") / "sample-synthetic")]
        label = SAMPLE_LABEL
    options = BacktestOptions(
        data=tuple(paths),
        agents=(
            AgentConfig(name="buy_and_hold", provider="baseline", model="buy_and_hold"),
            AgentConfig(name="ema_trend", provider="baseline", model="ema_trend"),
        ),
        llm_mode=LlmMode.REPLAY,
        cash_usd=settings.risk.starting_cash_usd,
        window_days=14,
    )
    database = open_database(settings)
    result = asyncio.run(
        run_backtest(settings, options, database=database, progress=RichProgress())
    )
    stdout.print(
        leaderboard_table(
            result.rows,
            title=(
                f"First look on {label}: {result.start:%Y-%m-%d %H:%M} to "
                f"{result.end:%Y-%m-%d %H:%M} UTC, every {result.interval}"
            ),
            hodl_pct=result.buy_and_hold_return_pct,
        )
    )
    stdout.print(NEXT_STEPS, highlight=False)
    stdout.print(
        f"See this run in the dashboard: arena serve --run {result.run_id}  "
        f"(then open http://{settings.serve.host}:{settings.serve.port}/?run={result.run_id})",
        highlight=False,
    )


def _first_look_data(data: list[Path] | None) -> tuple[list[Path] | None, str]:
    """Return the data for the first look and how to describe it (None: generate a sample)."""
    if data:
        return list(data), ", ".join(str(path) for path in data)
    for candidate in (Path("data") / "market", Path("..") / "shared" / "data" / "market"):
        if candidate.is_dir() and any(candidate.glob("*-5m.*")):
            return [candidate], f"the real candles in {candidate}"
    return None, "generated sample data (no real candles found in data/market)"
