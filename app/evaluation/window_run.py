"""Run one evaluation window with the backtest code and keep what the evaluation needs.

The only module of `app.evaluation` that touches the backtest runner, the database and the data
files: the executors call `run_window` (or `run_window_sync` in a worker process) once per window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from app.backtest import BacktestOptions, BacktestResult, plan_backtest
from app.config import AgentConfig, Settings
from app.db import queries
from app.db.pruning import prune_run
from app.db.session import Database
from app.domain import LlmMode
from app.errors import ConfigError
from app.evaluation.results import AgentWindowResult, WindowResult, sample_curve
from app.evaluation.windows import DataRange, Window
from app.llm.baselines import parse_random_model
from app.llm.quota import CallBudget
from app.wiring import load_market_data, open_database, run_backtest


@dataclass(frozen=True, slots=True)
class WindowJob:
    """What every window of one evaluation shares: the data, the agents and the costs."""

    data: tuple[Path, ...]
    agents: tuple[AgentConfig, ...]
    interval: str | None = None
    symbols: tuple[str, ...] | None = None
    llm_mode: LlmMode = LlmMode.REPLAY
    cash_usd: float = 10_000.0
    fee_bps: float | None = None
    slippage_bps: float | None = None
    # What each window's run keeps in the database (`app.db.pruning`): the evaluation itself
    # needs only the figures and curve it takes before pruning.
    keep: str = "full"

    def options(self, window: Window | None = None) -> BacktestOptions:
        """Return the backtest options of `window` (or of the whole data when None)."""
        return BacktestOptions(
            data=self.data,
            agents=self.agents,
            symbols=self.symbols,
            start=None if window is None else window.start,
            end=None if window is None else window.end,
            interval=self.interval,
            llm_mode=self.llm_mode,
            cash_usd=self.cash_usd,
            fee_bps=self.fee_bps,
            slippage_bps=self.slippage_bps,
        )


def report_group(agent: AgentConfig) -> str:
    """Return the report line of `agent`: the seeds of one `random` setup share a line."""
    if agent.provider == "baseline":
        spec = parse_random_model(agent.model)
        if spec is not None:
            return spec.group
    return agent.name


def data_range(
    settings: Settings, job: WindowJob, *, database: Database | None = None
) -> tuple[DataRange, str]:
    """Return where windows can lie in the job's data, and the cycle interval used."""
    options = job.options()
    data = load_market_data(options.data, coins=options.symbols, database=database)
    plan = plan_backtest(settings, options, data)
    return DataRange(first_at=plan.times[0], last_at=plan.times[-1], step=plan.step), plan.interval


async def run_window(
    settings: Settings,
    job: WindowJob,
    window: Window,
    *,
    database: Database,
    run_id: str | None = None,
    source: Database | None = None,
    budget: CallBudget | None = None,
) -> WindowResult:
    """Backtest every agent of `job` over `window` and return the window's results.

    The run is recorded in `database`; answers and candles come from `source` (default: the same).
    """
    result = await run_backtest(
        settings,
        job.options(window),
        database=database,
        run_id=run_id,
        source=source,
        budget=budget,
    )
    if result.start != window.start or result.end != window.end:
        raise ConfigError(
            f"window {window.key} was cut to {result.start:%Y-%m-%d %H:%M} to "
            f"{result.end:%Y-%m-%d %H:%M} by the data: plan the windows on this data and interval"
        )
    found = window_result(result, window, job=job, database=database)
    prune_run(database.engine, result.run_id, job.keep)
    return found


def run_window_sync(
    settings: Settings,
    job: WindowJob,
    window: Window,
    *,
    run_id: str | None = None,
    run_database_url: str | None = None,
    budget: CallBudget | None = None,
) -> WindowResult:
    """Open the databases and run one window (for a worker process).

    The run goes to `run_database_url` when given (a SQLite file of its own: writers of one
    SQLite file wait for each other), else to the settings' database; the answer cache and the
    candle cache are always the settings' database.
    """
    source = open_database(settings)
    database = source
    if run_database_url is not None:
        database = open_database(
            settings.model_copy(
                update={"database": settings.database.model_copy(update={"url": run_database_url})}
            )
        )
    try:
        return asyncio.run(
            run_window(
                settings,
                job,
                window,
                database=database,
                run_id=run_id,
                source=source,
                budget=budget,
            )
        )
    finally:
        database.engine.dispose()
        source.engine.dispose()


def window_result(
    result: BacktestResult, window: Window, *, job: WindowJob, database: Database
) -> WindowResult:
    """Return the evaluation's view of a finished backtest: figures and value curves."""
    configs = {agent.name: agent for agent in job.agents}
    rows = {row.name: row for row in result.rows}
    start_ns, end_ns = _ns(result.start), _ns(result.end)
    agents = []
    for stored in queries.agents(database.engine, result.run_id):
        row = rows[stored.name]
        equity = queries.equity_series(database.engine, stored.agent_id)
        curve = sample_curve(
            _index_ns(equity),
            equity.to_numpy(dtype=float),
            start_ns=start_ns,
            end_ns=end_ns,
            starting_cash_usd=stored.starting_cash_usd,
        )
        config = configs.get(stored.name)
        agents.append(
            AgentWindowResult(
                name=row.name,
                provider=row.provider,
                model=row.model,
                group=row.name if config is None else report_group(config),
                return_pct=row.return_pct,
                sharpe=row.sharpe,
                max_drawdown_pct=row.max_drawdown_pct,
                win_rate=row.win_rate,
                trades=row.trades,
                final_equity=row.final_equity,
                fees_paid=row.fees_paid,
                llm_calls=row.llm_calls,
                cache_hits=row.cache_hits,
                curve=curve,
            )
        )
    order = {agent.name: i for i, agent in enumerate(job.agents)}
    agents.sort(key=lambda agent: order.get(agent.name, len(order)))
    return WindowResult(
        index=window.index,
        start=result.start,
        end=result.end,
        interval=result.interval,
        cycles=result.cycles,
        buy_and_hold_return_pct=result.buy_and_hold_return_pct,
        agents=tuple(agents),
        run_id=result.run_id,
        symbols=result.symbols,
    )


def run_windows_in_process(
    settings: Settings, job: WindowJob, windows: Sequence[Window], *, database: Database
) -> list[WindowResult]:
    """Run the windows one after the other in this process (no executor)."""

    async def run_all() -> list[WindowResult]:
        return [await run_window(settings, job, window, database=database) for window in windows]

    return asyncio.run(run_all())


def _ns(moment: object) -> int:
    return int(pd.Timestamp(moment).as_unit("ns").value)  # type: ignore[arg-type]


def _index_ns(series: pd.Series) -> list[int]:
    index = pd.DatetimeIndex(series.index)
    if index.tz is None:
        index = index.tz_localize("UTC")
    return [int(value) for value in index.as_unit("ns").asi8]
