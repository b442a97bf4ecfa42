"""The `arena` command line (also `python -m app`). Thin: commands build through `app.wiring`."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import OperationalError

from app import __version__
from app.config import AgentConfig, Settings, load_settings
from app.domain import ensure_utc
from app.errors import AppError, ConfigError
from app.logs import configure_logging, mask_secrets
from app.reports import LeaderboardRow
from app.web.command import serve_command_for

app = typer.Typer(
    name="arena",
    help="Alpha Arena: LLMs trading crypto perpetuals on paper, live and over history.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# Piped output gets room for the wide leaderboard instead of a squeezed 80 columns.
stdout = Console() if sys.stdout.isatty() else Console(width=220)
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


app.command("serve")(serve_command_for(get_settings))


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


@app.command("quota")
def show_quota(
    probe: Annotated[
        bool,
        typer.Option(
            "--probe",
            help="Spend one minimal request per model to read fresh limits (this SPENDS quota).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show each configured model's calls today, last-seen limits and calls left at the cadence."""
    import asyncio
    from datetime import UTC, datetime

    from app.db.session import make_engine, make_session_factory
    from app.llm import quota_report as quota

    settings = get_settings()
    migrate_database(settings)
    session_factory = make_session_factory(make_engine(settings.database.url))
    probes: list[quota.ProbeResult] = []
    if probe:
        count = len(quota.configured_models(settings.agents))
        stderr.print(
            f"[yellow]--probe spends quota:[/] one request to each of {count} model(s) "
            "(on ModelScope even a rejected request counts)."
        )
        probes = asyncio.run(quota.probe_models(settings, session_factory, now=datetime.now(UTC)))
    report = quota.quota_report(settings, session_factory, now=datetime.now(UTC))
    if as_json:
        print_json(quota.report_json(settings, report, probes))
        return
    for line in quota.probe_lines(probes):
        stderr.print(mask_secrets(line), highlight=False)
    stdout.print(quota.report_table(settings, report))


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


def _agents_from(specs: list[str] | None, settings: Settings) -> list[AgentConfig]:
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


def _parse_time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{option} {value!r} is not an ISO time: use e.g. 2025-10-17T22:00 (UTC)"
        ) from None
    return ensure_utc(parsed)


class _RichProgress:
    """A progress bar on stderr with cycles/s and the LLM calls made."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn("backtest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} cycles/s"),
            TextColumn("LLM calls {task.fields[calls]}, cache hits {task.fields[hits]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=False,
        )
        self._task: Any = None
        self._calls = 0
        self._hits = 0
        self._done = 0
        self._started = 0.0
        self._pending = 0

    def start(self, total: int) -> None:
        import time

        self._started = time.perf_counter()
        self._progress.start()
        self._task = self._progress.add_task("cycles", total=total, rate="-", calls=0, hits=0)

    def advance(self, cycles: int, *, llm_calls: int, cache_hits: int) -> None:
        import time

        self._done += cycles
        self._pending += cycles
        self._calls += llm_calls
        self._hits += cache_hits
        # Redraw every 50 cycles: updating the bar costs more than a cached cycle.
        if self._pending < 50 and llm_calls == 0:
            return
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        self._progress.update(
            self._task,
            advance=self._pending,
            rate=f"{self._done / elapsed:,.0f}",
            calls=self._calls,
            hits=self._hits,
        )
        self._pending = 0

    def stop(self) -> None:
        if self._task is not None and self._pending:
            self._progress.update(
                self._task, advance=self._pending, calls=self._calls, hits=self._hits
            )
        self._progress.stop()


def _money(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}%"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def leaderboard_table(
    rows: Sequence[LeaderboardRow], *, title: str, hodl_pct: float | None
) -> Table:
    """Return the leaderboard as a rich table (buy-and-hold as the last line when known)."""
    table = Table(title=title, title_justify="left")
    for header, justify in (
        ("#", "right"),
        ("agent", "left"),
        ("model", "left"),
        ("account value", "right"),
        ("return", "right"),
        ("Sharpe", "right"),
        ("max DD", "right"),
        ("trades", "right"),
        ("win rate", "right"),
        ("fees", "right"),
        ("funding", "right"),
        ("LLM calls", "right"),
        ("cache hits", "right"),
        ("parse failures", "right"),
        ("rejected", "right"),
        ("tokens in/out", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for rank, row in enumerate(rows, start=1):
        table.add_row(
            str(rank),
            row.name,
            f"{row.provider}:{row.model}",
            _money(row.final_equity),
            _pct(row.return_pct),
            _ratio(row.sharpe),
            f"{row.max_drawdown_pct:.2f}%",
            str(row.trades),
            "-" if row.win_rate is None else f"{row.win_rate * 100:.1f}%",
            _money(row.fees_paid),
            _money(row.funding_paid),
            str(row.llm_calls),
            str(row.cache_hits),
            str(row.parse_failures),
            str(row.rejected_decisions),
            f"{row.prompt_tokens:,}/{row.completion_tokens:,}",
        )
    if hodl_pct is not None:
        table.add_row("", "buy & hold", "equal weight, no fees", "", _pct(hodl_pct), *[""] * 11)
    return table


@app.command("run")
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

    from app.live import run_arena

    settings = get_settings()
    if at is not None and not once:
        raise ConfigError("--at needs --once (the daemon always runs on the clock)")
    replay_at = _parse_time(at, "--at")
    if replay_at is not None and replay_at > datetime.now(UTC):
        raise ConfigError(
            f"--at {at} is in the future: --once --at replays a past cycle; "
            "use --once alone for the current one"
        )
    agents = _agents_from(agent, settings)
    code = asyncio.run(run_arena(settings, agents, once=once, at=replay_at, serve=not no_serve))
    raise typer.Exit(code)


@app.command("start")
def start_command(
    data: Annotated[
        list[Path] | None,
        typer.Option("--data", help="Candle files or folders for the offline first look."),
    ] = None,
) -> None:
    """The main job: the live arena when a model key is set, else an offline first look."""
    import asyncio

    from app.live import run_arena
    from app.wiring import llm_agents, missing_keys

    settings = get_settings()
    agents = list(settings.agents)
    lacking = {name for names in missing_keys(settings, agents).values() for name in names}
    if any(agent.name not in lacking for agent in llm_agents(agents)):
        raise typer.Exit(asyncio.run(run_arena(settings, agents, serve=True)))
    _first_look(settings, data)


def _first_look(settings: Settings, data: list[Path] | None) -> None:
    """Backtest the baselines offline and say how to bring a model in."""
    import asyncio

    from app.backtest import BacktestOptions, run_backtest
    from app.market.sample import SAMPLE_LABEL, write_sample_data
    from app.wiring import open_database

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
        llm_mode="replay",
        cash_usd=settings.risk.starting_cash_usd,
        window_days=14,
    )
    database = open_database(settings)
    result = asyncio.run(
        run_backtest(settings, options, database=database, progress=_RichProgress())
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
    stdout.print(
        "\nTo let a model trade:\n"
        "  1. cp .env.example .env   and put your ModelScope token after MODELSCOPE_API_KEY=\n"
        "     (https://modelscope.cn/my/myaccesstoken; DeepSeek, DashScope and any\n"
        "     OpenAI-compatible server work too, see README)\n"
        "  2. .venv/bin/python scripts/test_modelscope.py   checks the key with one call\n"
        "  3. bash scripts/run.sh   starts the live arena (arena run)\n"
        "Backtest models on history: arena backtest --data PATH --agent NAME=PROVIDER:MODEL\n"
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


@app.command("backtest")
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
        str, typer.Option("--llm-mode", help="live | cached | replay (replay never calls a model).")
    ] = "cached",
    cash: Annotated[float, typer.Option("--cash", help="Starting cash per agent, USD.")] = 10_000.0,
    fee_bps: Annotated[
        float | None, typer.Option("--fee-bps", help="Taker fee (default: RISK_FEE_BPS).")
    ] = None,
    slippage_bps: Annotated[
        float | None, typer.Option("--slippage-bps", help="Slippage (default: RISK_SLIPPAGE_BPS).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary JSON (DESIGN.md §3.5) only.")
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write chart, trades and summary here.")
    ] = None,
) -> None:
    """Replay history through the same cycle code, with cached LLM answers."""
    import asyncio

    from app.backtest import BacktestOptions, run_backtest
    from app.wiring import open_database

    settings = get_settings()
    if llm_mode not in ("live", "cached", "replay"):
        raise ConfigError(f"--llm-mode {llm_mode!r}: use live, cached or replay")
    if cash <= 0:
        raise ConfigError(f"--cash must be positive, got {cash}")
    for option, value in (("--fee-bps", fee_bps), ("--slippage-bps", slippage_bps)):
        if value is not None and not 0 <= value < 1000:
            raise ConfigError(f"{option} must be between 0 and 1000 basis points, got {value}")
    options = BacktestOptions(
        data=tuple(data),
        agents=tuple(_agents_from(agent, settings)),
        symbols=tuple(s.strip().upper() for s in symbols.split(",") if s.strip())
        if symbols
        else None,
        start=_parse_time(start, "--start"),
        end=_parse_time(end, "--end"),
        interval=interval,
        llm_mode=llm_mode,  # type: ignore[arg-type]
        cash_usd=cash,
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        report_dir=report,
    )
    database = open_database(settings)
    result = asyncio.run(
        run_backtest(settings, options, database=database, progress=_RichProgress())
    )
    if as_json:
        print_json(result.summary)
        return
    stdout.print(
        leaderboard_table(
            result.rows,
            title=(
                f"Backtest {result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC, "
                f"{', '.join(result.symbols)}, every {result.interval} ({result.cycles:,} cycles)"
            ),
            hodl_pct=result.buy_and_hold_return_pct,
        )
    )
    stderr.print(
        f"{result.funding_note}. Run id {result.run_id} (arena leaderboard --run "
        f"{result.run_id}); {result.cycles / max(result.elapsed_s, 1e-9):,.0f} cycles/s."
    )
    if report is not None:
        stderr.print(f"report written to {report}/ (account_value.png, trades.csv, summary.json)")


def _open_existing(settings: Settings) -> Any:
    from app.wiring import open_database

    return open_database(settings)


def _pick_run(engine: Any, run: str | None) -> str:
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


@app.command("leaderboard")
def leaderboard_command(run: RunOption = None, as_json: JsonOption = False) -> None:
    """Rank the agents of a run by account value."""
    from app.reports import leaderboard

    settings = get_settings()
    database = _open_existing(settings)
    run_id = _pick_run(database.engine, run)
    rows = leaderboard(database.engine, run_id)
    if as_json:
        print_json({"run": run_id, "agents": [dataclasses.asdict(row) for row in rows]})
        return
    stdout.print(leaderboard_table(rows, title=f"Leaderboard ({run_id})", hodl_pct=None))


@app.command("positions")
def positions_command(run: RunOption = None, as_json: JsonOption = False) -> None:
    """Show every agent's open positions with their exit plans."""
    from app.db import queries

    settings = get_settings()
    database = _open_existing(settings)
    run_id = _pick_run(database.engine, run)
    items = []
    for agent in queries.agents(database.engine, run_id):
        for position in queries.open_positions(database.engine, agent.agent_id):
            items.append((agent.name, position))
    if as_json:
        print_json(
            [
                {
                    "agent": name,
                    "coin": p.coin,
                    "side": p.side,
                    "quantity": p.quantity,
                    "entry_price": p.entry_price,
                    "leverage": p.leverage,
                    "margin_usd": p.margin_usd,
                    "liquidation_price": p.liquidation_price,
                    "profit_target": p.exit_plan.profit_target,
                    "stop_loss": p.exit_plan.stop_loss,
                    "invalidation_condition": p.exit_plan.invalidation_condition,
                    "opened_at": p.opened_at.isoformat(),
                    "funding_usd": p.funding_usd,
                }
                for name, p in items
            ]
        )
        return
    table = Table(title=f"Open positions ({run_id})", title_justify="left")
    for header in (
        "agent",
        "coin",
        "side",
        "qty",
        "entry",
        "lev",
        "margin",
        "liq.",
        "target",
        "stop",
        "opened (UTC)",
    ):
        table.add_column(header)
    for name, p in items:
        table.add_row(
            name,
            p.coin,
            p.side,
            f"{p.quantity:.6g}",
            f"{p.entry_price:.6g}",
            f"{p.leverage}x",
            _money(p.margin_usd),
            f"{p.liquidation_price:.6g}",
            "-" if p.exit_plan.profit_target is None else f"{p.exit_plan.profit_target:.6g}",
            "-" if p.exit_plan.stop_loss is None else f"{p.exit_plan.stop_loss:.6g}",
            f"{p.opened_at:%Y-%m-%d %H:%M}",
        )
    if not items:
        stdout.print(f"no open positions in run {run_id}")
        return
    stdout.print(table)


@app.command("trades")
def trades_command(
    run: RunOption = None,
    limit: Annotated[int, typer.Option("--limit", help="Most recent trades to show.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Show the closed trades (entry, exit, fees, funding, PnL, holding time)."""
    from app.db import queries

    settings = get_settings()
    database = _open_existing(settings)
    run_id = _pick_run(database.engine, run)
    items = []
    for agent in queries.agents(database.engine, run_id):
        for trade in queries.closed_trades(database.engine, agent.agent_id):
            items.append((agent.name, trade))
    items.sort(key=lambda item: item[1].closed_at, reverse=True)
    items = items[:limit]
    if as_json:
        print_json(
            [
                {
                    "agent": name,
                    **dataclasses.asdict(trade),
                    "holding_hours": trade.holding_time.total_seconds() / 3600,
                }
                for name, trade in items
            ]
        )
        return
    if not items:
        stdout.print(f"no closed trades in run {run_id}")
        return
    table = Table(title=f"Closed trades ({run_id}), newest first", title_justify="left")
    for header in (
        "agent",
        "coin",
        "side",
        "qty",
        "entry",
        "exit",
        "lev",
        "fees",
        "funding",
        "net PnL",
        "held",
        "exit reason",
        "closed (UTC)",
    ):
        table.add_column(header)
    for name, t in items:
        table.add_row(
            name,
            t.coin,
            t.side,
            f"{t.quantity:.6g}",
            f"{t.entry_price:.6g}",
            f"{t.exit_price:.6g}",
            f"{t.leverage}x",
            _money(t.entry_fee_usd + t.exit_fee_usd),
            _money(t.funding_usd),
            _money(t.net_pnl_usd),
            f"{t.holding_time.total_seconds() / 3600:.1f}h",
            t.exit_reason,
            f"{t.closed_at:%Y-%m-%d %H:%M}",
        )
    stdout.print(table)


@app.command("chat")
def chat_command(
    run: RunOption = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="Calls per agent.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Show each agent's recent calls: time, reasoning summary, decisions and their outcome."""
    from app.db import queries

    settings = get_settings()
    database = _open_existing(settings)
    run_id = _pick_run(database.engine, run)
    entries = queries.recent_chat(database.engine, run_id, agent=agent, limit=limit)
    if as_json:
        print_json(
            [
                {
                    "agent": e.agent,
                    "at": e.at.isoformat(),
                    "model": e.model,
                    "outcome": e.outcome,
                    "reasoning": e.reasoning,
                    "response": e.response_text,
                    "error": e.error,
                    "decisions": [
                        {"coin": c, "signal": s, "outcome": o, "reason": r}
                        for c, s, o, r in e.decisions
                    ],
                }
                for e in entries
            ]
        )
        return
    if not entries:
        stdout.print(f"no model calls recorded in run {run_id}")
        return
    for e in entries:
        stdout.rule(
            f"{e.agent} · {e.at:%Y-%m-%d %H:%M:%S} UTC · {e.model} · {e.outcome}", align="left"
        )
        summary = queries.summarize_reasoning(e.reasoning or e.response_text)
        if summary:
            stdout.print(summary, highlight=False)
        if e.error:
            stdout.print(f"[red]{e.error}[/]", highlight=False)
        for coin, signal, outcome, reason in e.decisions:
            note = f" ({reason})" if reason else ""
            stdout.print(f"  {coin}: {signal} → {outcome}{note}", highlight=False)


data_app = typer.Typer(help="Market data: fill the candle cache.", no_args_is_help=True)
app.add_typer(data_app, name="data")


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
    from datetime import UTC

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from app.market.download import download_candles, parse_time

    start = parse_time(since, option="--since")
    end = parse_time(until, option="--until") if until else datetime.now(UTC)
    settings = get_settings()
    coins = (
        [item.strip().upper() for item in symbols.split(",") if item.strip()]
        if symbols
        else list(settings.symbols)
    )
    migrate_database(settings)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=stderr
    ) as bar:

        def track(coin: str, total: int) -> Any:
            task = bar.add_task(f"{coin} {timeframe}", total=total)
            return lambda found: bar.advance(task, found)

        results = asyncio.run(
            download_candles(
                settings,
                coins=coins,
                timeframe=timeframe,
                start=start,
                end=end,
                exchange_id=exchange,
                progress=track,
            )
        )
    if as_json:
        print_json([dataclasses.asdict(result) for result in results])
        return
    for result in results:
        stdout.print(
            f"{result.symbol} {result.timeframe}: {result.cached_before} already cached, "
            f"{result.fetched} fetched, {result.expected} expected",
            highlight=False,
        )
    if results:
        stdout.print(
            f"replay them with: arena backtest --data cache:{results[0].source} --agent ...",
            highlight=False,
        )


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
    except OperationalError as error:
        hint = (
            "another process holds the database; stop it or use another DATABASE_URL"
            if "locked" in str(error)
            else "check DATABASE_URL and the disk"
        )
        _fail(f"the database failed: {error.orig}; {hint}", 1)
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        _fail(f"{error.strerror or error}{where}", 1)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
