"""Backtests: replay candle files through the same cycle engine, on a simulated clock.

Look-ahead is ruled out by construction: a cycle at `t` sees only candles closed by `t`
(`HistoricalMarketData`), its decisions fill at the open of the candle that starts at `t`, and
exits between cycles are applied from the candles that follow. Indicators are computed once over
the whole history; each cycle only slices. LLM answers go through the response cache
(`cached` by default; `replay` never calls a model).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from app.config import AgentConfig, LlmMode, Settings
from app.domain import MarketSnapshot, ensure_utc, timeframe_to_timedelta
from app.errors import ConfigError
from app.market.dataset import DataSet
from app.market.historical import HistoricalMarketData
from app.reports import (
    LeaderboardRow,
    backtest_summary,
    equity_frame,
    leaderboard,
    write_equity_chart,
    write_json,
    write_trades_csv,
)
from app.trading.engine import AgentSlot, CycleEngine, RunningSharpe
from app.trading.paper import PaperAccount
from app.wiring import (
    Database,
    agent_identities,
    build_strategies,
    cycle_store,
    engine_config,
    historical_market,
    load_market_data,
    require_keys,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BacktestOptions:
    """What `arena backtest` was asked to do."""

    data: tuple[Path, ...]
    agents: tuple[AgentConfig, ...]
    symbols: tuple[str, ...] | None = None
    start: datetime | None = None
    end: datetime | None = None
    interval: str | None = None
    llm_mode: LlmMode = LlmMode.CACHED
    cash_usd: float = 10_000.0
    fee_bps: float | None = None
    slippage_bps: float | None = None
    report_dir: Path | None = None
    window_days: float | None = None


@dataclass(frozen=True, slots=True)
class BacktestResult:
    """The outcome of one backtest."""

    run_id: str
    start: datetime
    end: datetime
    cycles: int
    symbols: tuple[str, ...]
    interval: str
    rows: tuple[LeaderboardRow, ...]
    buy_and_hold_return_pct: float
    funding_note: str
    summary: Mapping[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0


class Progress(Protocol):
    """Where the backtest reports how far it got."""

    def start(self, total: int) -> None:
        """Announce the number of cycles."""
        ...

    def advance(self, cycles: int, *, llm_calls: int, cache_hits: int) -> None:
        """Report `cycles` more cycles done, with the calls and cache hits they made."""
        ...

    def stop(self) -> None:
        """Finish the display."""
        ...


class _NoProgress:
    def start(self, total: int) -> None:
        del total

    def advance(self, cycles: int, *, llm_calls: int, cache_hits: int) -> None:
        del cycles, llm_calls, cache_hits

    def stop(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _Plan:
    market: HistoricalMarketData
    data: DataSet
    interval: str
    step: timedelta
    times: tuple[datetime, ...]


def _ceil_time(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    buckets = math.ceil((moment - epoch) / step)
    return epoch + buckets * step


def plan_backtest(
    settings: Settings, options: BacktestOptions, database: Database | None = None
) -> _Plan:
    """Load the data and work out the cycle times; raise `ConfigError` on unusable input."""
    if not options.data:
        raise ConfigError("give the candle files or folders to replay with --data PATH")
    data = load_market_data(options.data, coins=options.symbols, database=database)
    data = _in_prompt_order(data, options.symbols or tuple(settings.symbols))
    base_step = timeframe_to_timedelta(data.timeframe)
    if options.interval is None:
        configured = settings.schedule.interval
        interval = configured if timeframe_to_timedelta(configured) >= base_step else data.timeframe
        if interval != configured:
            log.info(
                "the data has %s candles: cycling every %s (the configured %s is finer)",
                data.timeframe,
                interval,
                configured,
            )
    else:
        interval = options.interval
        if timeframe_to_timedelta(interval) < base_step:
            raise ConfigError(
                f"--interval {interval} is finer than the data's {data.timeframe} candles: "
                f"use --interval {data.timeframe} or a multiple of it, or give finer candles"
            )
    step = timeframe_to_timedelta(interval)
    market = historical_market(
        data, intraday_timeframe=interval, context_timeframe=settings.schedule.context_timeframe
    )
    ready = market.first_ready_at()
    last_possible = market.end_at - base_step
    if options.start is not None:
        wanted = ensure_utc(options.start)
    elif options.window_days is not None:
        # The last days of the data (after the warm-up), for a quick look.
        wanted = max(ready, last_possible - timedelta(days=options.window_days))
    else:
        wanted = ready
    start = _ceil_time(wanted, step)
    if start < ready:
        raise ConfigError(
            f"--start {start:%Y-%m-%d %H:%M} is before the indicators have warmed up on this data "
            f"(EMA50 on {settings.schedule.context_timeframe} candles): start at "
            f"{ready:%Y-%m-%d %H:%M} or later, or give earlier candles"
        )
    # The last cycle needs a candle starting at its time to fill at.
    end = ensure_utc(options.end) if options.end else last_possible
    if end > last_possible:
        log.info("the data ends at %s: the last cycle is at %s", market.end_at, last_possible)
        end = last_possible
    if end < start:
        raise ConfigError(
            f"nothing to replay: the window {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} is "
            f"empty (the data covers {market.start_at:%Y-%m-%d %H:%M} to "
            f"{market.end_at:%Y-%m-%d %H:%M})"
        )
    count = int((end - start) / step) + 1
    times = tuple(start + i * step for i in range(count))
    return _Plan(market=market, data=data, interval=interval, step=step, times=times)


def _in_prompt_order(data: DataSet, order: Sequence[str]) -> DataSet:
    """Return `data` with its coins in `order` (nof1's BTC, ETH, SOL, BNB, XRP, DOGE by default)."""
    rank = {coin: i for i, coin in enumerate(order)}
    coins = sorted(data.candles, key=lambda coin: (rank.get(coin, len(rank)), coin))
    return replace(data, candles={coin: data.candles[coin] for coin in coins})


def _fill_prices(market: HistoricalMarketData) -> Any:
    def prices(snapshot: MarketSnapshot) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        for coin in snapshot.coins:
            nxt = market.next_open(coin, snapshot.at)
            found[coin] = nxt[1] if nxt is not None and nxt[0] == snapshot.at else None
        return found

    return prices


def buy_and_hold_series(
    market: HistoricalMarketData, times: Sequence[datetime], *, cash_usd: float
) -> pd.Series:
    """Return an equal-weight, fee-free buy-and-hold of every coin, bought at the first cycle."""
    coins = market.coins
    starts = {coin: market.next_open(coin, times[0]) for coin in coins}
    values = []
    for moment in times:
        ratios = []
        for coin in coins:
            entry = starts[coin]
            price = market.price_at(coin, moment)
            if entry is None or price is None:
                continue
            ratios.append(price / entry[1])
        values.append(cash_usd * (sum(ratios) / len(ratios)) if ratios else float("nan"))
    return pd.Series(values, index=pd.DatetimeIndex(list(times)), name="buy_and_hold")


async def run_backtest(
    settings: Settings,
    options: BacktestOptions,
    *,
    database: Database,
    progress: Progress | None = None,
    run_id: str | None = None,
) -> BacktestResult:
    """Replay the data through the cycle engine and return the leaderboard."""
    progress = progress or _NoProgress()
    if not options.agents:
        raise ConfigError(
            "no agents: pass --agent NAME=PROVIDER:MODEL or list agents in arena.toml"
        )
    if options.llm_mode != "replay":
        require_keys(
            settings,
            options.agents,
            hint="or re-run with --llm-mode replay to use only answers stored by an earlier run",
        )
    plan = plan_backtest(settings, options, database)
    run_id = run_id or f"backtest-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    store = cycle_store(database, run_id=run_id)
    first = plan.times[0]
    store.register_agents(agent_identities(options.agents, cash_usd=options.cash_usd), at=first)
    store.track_done_cycles_in_memory()
    config = engine_config(
        settings,
        coins=plan.market.coins,
        interval=plan.step,
        exit_timeframe=plan.data.timeframe,
        fee_bps=options.fee_bps,
        slippage_bps=options.slippage_bps,
    )
    strategies, runtime = build_strategies(
        options.agents, settings, database=database, llm_mode=options.llm_mode
    )
    slots = [
        AgentSlot(
            name=agent.name,
            strategy=strategies[agent.name],
            account=PaperAccount(agent.starting_cash_usd or options.cash_usd, costs=config.costs),
            sharpe=RunningSharpe(plan.step),
            checked_until=first,
        )
        for agent in options.agents
    ]
    clock_at = [first]
    engine = CycleEngine(
        market=plan.market,
        store=store,
        agents=slots,
        config=config,
        clock=lambda: clock_at[0],
        fill_prices=_fill_prices(plan.market),
        rules=await plan.market.market_rules(),
        batch_records=True,
    )
    started = datetime.now(UTC)
    progress.start(len(plan.times))
    try:
        for moment in plan.times:
            clock_at[0] = moment
            report = await engine.run_cycle(moment)
            stopped = [slot for slot in slots if slot.disabled_reason is not None]
            if stopped:
                # A backtest with an agent that stopped answering compares nothing: say why.
                raise ConfigError(
                    f"agent {stopped[0].name} stopped at {moment:%Y-%m-%d %H:%M}: "
                    f"{stopped[0].disabled_reason}"
                )
            progress.advance(
                1,
                llm_calls=sum(a.llm_calls for a in report.agents),
                cache_hits=sum(a.cache_hits for a in report.agents),
            )
        engine.flush()
    finally:
        progress.stop()
        if runtime is not None:
            await runtime.aclose()
    elapsed = (datetime.now(UTC) - started).total_seconds()
    rows = tuple(leaderboard(database.engine, run_id))
    benchmark = buy_and_hold_series(plan.market, plan.times, cash_usd=options.cash_usd)
    final = benchmark.dropna()
    hodl_pct = float((final.iloc[-1] / options.cash_usd - 1.0) * 100.0) if len(final) else 0.0
    funded = [coin for coin in plan.market.coins if plan.data.funding.get(coin) is not None]
    funding_note = (
        f"funding charged from files for {', '.join(funded)}"
        if funded
        else "no funding files given: funding is not charged in this backtest"
    )
    summary = backtest_summary(
        start=plan.times[0],
        end=plan.times[-1],
        cycles=len(plan.times),
        symbols=plan.market.coins,
        buy_and_hold_return_pct=hodl_pct,
        rows=rows,
    )
    result = BacktestResult(
        run_id=run_id,
        start=plan.times[0],
        end=plan.times[-1],
        cycles=len(plan.times),
        symbols=plan.market.coins,
        interval=plan.interval,
        rows=rows,
        buy_and_hold_return_pct=hodl_pct,
        funding_note=funding_note,
        summary=summary,
        elapsed_s=elapsed,
    )
    if options.report_dir is not None:
        write_report(options.report_dir, result, database=database, benchmark=benchmark)
    return result


def write_report(
    directory: Path, result: BacktestResult, *, database: Database, benchmark: pd.Series
) -> None:
    """Write the chart (PNG), the trades (CSV) and the summary (JSON) into `directory`."""
    from app.db import queries

    directory.mkdir(parents=True, exist_ok=True)
    equity = equity_frame(database.engine, result.run_id)
    write_equity_chart(
        directory / "account_value.png",
        equity,
        benchmark=benchmark,
        title=(
            f"Account value, {result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC "
            f"({', '.join(result.symbols)}, every {result.interval})"
        ),
    )
    trades = {
        agent.name: queries.closed_trades(database.engine, agent.agent_id)
        for agent in queries.agents(database.engine, result.run_id)
    }
    write_trades_csv(directory / "trades.csv", trades)
    write_json(
        directory / "summary.json",
        {
            **result.summary,
            "run_id": result.run_id,
            "interval": result.interval,
            "funding": result.funding_note,
        },
    )
