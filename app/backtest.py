"""Backtests: replay candle files through the same cycle engine, on a simulated clock.

Look-ahead is ruled out by construction: a cycle at `t` sees only candles closed by `t`
(`HistoricalMarketData`), its decisions fill at the open of the candle that starts at `t`, and
exits between cycles are applied from the candles that follow. Indicators are computed once over
the whole history; each cycle only slices. LLM answers go through the response cache
(`cached` by default; `replay` never calls a model).

The composition root (`app.wiring.build_backtest`) loads the data, plans the cycles
(`plan_backtest`) and builds the engine; `Backtest.run()` replays the plan and reads the
leaderboard back from the run's records.
"""

from __future__ import annotations

import gc
import logging
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from app.config import AgentConfig, Settings
from app.db.session import Database
from app.domain import LlmMode, MarketSnapshot, ensure_utc, timeframe_to_timedelta
from app.errors import ConfigError
from app.llm.runtime import LlmRuntime
from app.market.dataset import DataSet
from app.market.historical import HistoricalMarketData
from app.reports import (
    SYNTHETIC_MARK,
    LeaderboardRow,
    backtest_summary,
    equity_chart,
    equity_frame,
    is_synthetic_run,
    leaderboard,
    save_chart,
    write_json,
    write_trades_csv,
)
from app.trading.engine import AgentSlot, CycleEngine

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
    # Replay this recorded run's own answers and failures (with `llm_mode` replay), not the cache's.
    replay_run: str | None = None
    cash_usd: float = 10_000.0
    fee_bps: float | None = None
    slippage_bps: float | None = None
    report_dir: Path | None = None
    window_days: float | None = None
    # The data is synthetic (also recognised from the sample data's folder): every output says so.
    synthetic: bool = False
    # With `--data cache:EXCHANGE`: replay this timeframe (default: the finest cached).
    cache_timeframe: str | None = None


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
    synthetic: bool = False
    # What the data check left out (implausible candles), or "" when nothing.
    data_note: str = ""


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
class BacktestPlan:
    """The replayed market and the cycle times of one backtest."""

    market: HistoricalMarketData
    data: DataSet
    interval: str
    step: timedelta
    times: tuple[datetime, ...]


def _ceil_time(moment: datetime, step: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    buckets = math.ceil((moment - epoch) / step)
    return epoch + buckets * step


def plan_backtest(settings: Settings, options: BacktestOptions, data: DataSet) -> BacktestPlan:
    """Work out the cycle times over the loaded data; raise `ConfigError` on unusable input."""
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
    market = HistoricalMarketData.from_data_set(
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
    return BacktestPlan(market=market, data=data, interval=interval, step=step, times=times)


def _in_prompt_order(data: DataSet, order: Sequence[str]) -> DataSet:
    """Return `data` with its coins in `order` (nof1's BTC, ETH, SOL, BNB, XRP, DOGE by default)."""
    rank = {coin: i for i, coin in enumerate(order)}
    coins = sorted(data.candles, key=lambda coin: (rank.get(coin, len(rank)), coin))
    return replace(data, candles={coin: data.candles[coin] for coin in coins})


def fill_prices_of(market: HistoricalMarketData) -> Any:
    """Return the engine's fill prices: the open of the candle that starts at the cycle's time."""

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


class SimulatedClock:
    """A backtest's clock: the time of the cycle being replayed (the engine's fill time)."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def new_run_id(started_at: datetime, *, synthetic: bool = False) -> str:
    """Return a fresh backtest run id (the time it started and a random suffix).

    A run on synthetic data carries `SYNTHETIC` in its id (`backtest-SYNTHETIC-...`).
    """
    mark = f"{SYNTHETIC_MARK}-" if synthetic else ""
    return f"backtest-{mark}{started_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class Backtest:
    """A backtest built and ready: the plan, the engine over its agents, where it records."""

    run_id: str
    options: BacktestOptions
    plan: BacktestPlan
    engine: CycleEngine
    slots: Sequence[AgentSlot]
    database: Database
    clock: SimulatedClock
    runtime: LlmRuntime | None = None

    async def run(self, progress: Progress | None = None) -> BacktestResult:
        """Replay every cycle of the plan, then return the leaderboard (and write the report)."""
        progress = progress or _NoProgress()
        plan, engine = self.plan, self.engine
        # The history, its indicators and the modules are built and live for the whole run: keep
        # them out of the collector's full passes, which otherwise rescan them a few times per
        # run (about a tenth of a replay's time went to two of them).
        gc.collect()
        gc.freeze()
        started = time.perf_counter()
        progress.start(len(plan.times))
        try:
            for moment in plan.times:
                self.clock.now = moment
                report = await engine.run_cycle(moment)
                stopped = [slot for slot in self.slots if slot.disabled_reason is not None]
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
            # Back under the collector: a worker running window after window must free them.
            gc.unfreeze()
            progress.stop()
            if self.runtime is not None:
                await self.runtime.aclose()
        return self._result(elapsed_s=time.perf_counter() - started)

    def _result(self, *, elapsed_s: float) -> BacktestResult:
        plan, options = self.plan, self.options
        rows = tuple(leaderboard(self.database.engine, self.run_id))
        benchmark = buy_and_hold_series(plan.market, plan.times, cash_usd=options.cash_usd)
        final = benchmark.dropna()
        hodl_pct = float((final.iloc[-1] / options.cash_usd - 1.0) * 100.0) if len(final) else 0.0
        funded = [coin for coin in plan.market.coins if plan.data.funding.get(coin) is not None]
        funding_note = (
            f"funding charged from files for {', '.join(funded)}"
            if funded
            else "no funding files given: funding is not charged in this backtest"
        )
        synthetic = is_synthetic_run(self.run_id)
        summary = backtest_summary(
            run_id=self.run_id,
            synthetic=synthetic,
            start=plan.times[0],
            end=plan.times[-1],
            cycles=len(plan.times),
            symbols=plan.market.coins,
            buy_and_hold_return_pct=hodl_pct,
            rows=rows,
        )
        result = BacktestResult(
            run_id=self.run_id,
            start=plan.times[0],
            end=plan.times[-1],
            cycles=len(plan.times),
            symbols=plan.market.coins,
            interval=plan.interval,
            rows=rows,
            buy_and_hold_return_pct=hodl_pct,
            funding_note=funding_note,
            summary=summary,
            elapsed_s=elapsed_s,
            synthetic=synthetic,
            data_note="; ".join(plan.data.notes),
        )
        if options.report_dir is not None:
            write_report(options.report_dir, result, database=self.database, benchmark=benchmark)
        return result


def write_report(
    directory: Path, result: BacktestResult, *, database: Database, benchmark: pd.Series
) -> None:
    """Write the chart (PNG), the trades (CSV) and the summary (JSON) into `directory`."""
    from app.db import queries

    directory.mkdir(parents=True, exist_ok=True)
    equity = equity_frame(database.engine, result.run_id)
    title = (
        f"Account value, {result.start:%Y-%m-%d %H:%M} to {result.end:%Y-%m-%d %H:%M} UTC "
        f"({', '.join(result.symbols)}, every {result.interval})"
    )
    if result.synthetic:
        title = f"SYNTHETIC data (a seeded random walk, not market prices)\n{title}"
    figure = equity_chart(
        equity,
        benchmark=benchmark,
        title=title,
        returns_pct={row.name: row.return_pct for row in result.rows},
        benchmark_return_pct=result.buy_and_hold_return_pct,
        label_suffix=" (SYNTHETIC)" if result.synthetic else "",
    )
    save_chart(directory / "account_value.png", figure)
    trades = {
        agent.name: queries.closed_trades(database.engine, agent.agent_id)
        for agent in queries.agents(database.engine, result.run_id)
    }
    write_trades_csv(directory / "trades.csv", trades)
    write_json(
        directory / "summary.json",
        {
            **result.summary,
            "interval": result.interval,
            "funding": result.funding_note,
            "data": result.data_note or "every candle passed the plausibility check",
        },
    )
