"""Leaderboards and reports over the records: tables, the backtest JSON, a chart and a CSV."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.db import queries
from app.db.llm_store import usage_by_agent
from app.domain import ClosedTrade
from app.metrics import compute_metrics

# In the run id of a backtest on synthetic data (`backtest-SYNTHETIC-...`), so every output of
# that run can say so.
SYNTHETIC_MARK = "SYNTHETIC"


def is_synthetic_run(run_id: str) -> bool:
    """Return True for the run id of a backtest on synthetic data."""
    return SYNTHETIC_MARK in run_id.split("-")


@dataclass(frozen=True, slots=True)
class LeaderboardRow:
    """One agent's standing: the `arena backtest --json` fields plus a few for the tables."""

    name: str
    provider: str
    model: str
    final_equity: float
    return_pct: float
    sharpe: float | None
    sortino: float | None
    max_drawdown_pct: float
    trades: int
    win_rate: float | None
    fees_paid: float
    funding_paid: float
    llm_calls: int
    cache_hits: int
    parse_failures: int
    rejected_decisions: int
    failed_cycles: int
    open_positions: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    mean_latency_ms: float = 0.0
    # Why `sharpe` is None (too short a sample, no cycle yet...); None when it is a number.
    sharpe_note: str | None = None
    # The last account snapshot; None: the agent is registered but has no cycle yet.
    last_at: datetime | None = None
    # Calls held with no request sent: every model skipped for quota/cooldown, or not served.
    held_quota: int = 0
    held_not_served: int = 0

    @property
    def held_text(self) -> str:
        """Return the held calls as the tables show them ("quota 72", "" when none)."""
        parts = []
        if self.held_quota:
            parts.append(f"quota {self.held_quota}")
        if self.held_not_served:
            parts.append(f"not served {self.held_not_served}")
        return ", ".join(parts)

    def as_contract(self) -> dict[str, Any]:
        """Return the agent object of `arena backtest --json`, exactly (README, Backtests)."""
        return {
            "name": self.name,
            "final_equity": _round(self.final_equity),
            "return_pct": _round(self.return_pct),
            "sharpe": _round(self.sharpe),
            "sharpe_note": self.sharpe_note,
            "max_drawdown_pct": _round(self.max_drawdown_pct),
            "trades": self.trades,
            "win_rate": _round(self.win_rate),
            "fees_paid": _round(self.fees_paid),
            "funding_paid": _round(self.funding_paid),
            "llm_calls": self.llm_calls,
            "cache_hits": self.cache_hits,
            "parse_failures": self.parse_failures,
            "rejected_decisions": self.rejected_decisions,
        }


def _round(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)


def leaderboard(engine: Engine, run_id: str) -> list[LeaderboardRow]:
    """Return the run's agents ranked by account value."""
    rows = []
    for agent in queries.agents(engine, run_id):
        equity = queries.equity_series(engine, agent.agent_id)
        trades = queries.closed_trades(engine, agent.agent_id)
        open_positions = queries.open_positions(engine, agent.agent_id)
        counts = queries.call_counts(engine, agent.agent_id)
        with Session(engine) as session:
            usage = usage_by_agent(session, agent_ids=[agent.agent_id]).get(agent.agent_id)
        metrics = compute_metrics(
            equity,
            trades,
            starting_cash_usd=agent.starting_cash_usd,
            open_positions=open_positions,
            fees_paid_usd=agent.fees_paid_usd,
            funding_paid_usd=agent.funding_paid_usd,
        )
        rows.append(
            LeaderboardRow(
                name=agent.name,
                provider=agent.provider,
                model=agent.model,
                final_equity=agent.equity_usd,
                return_pct=(agent.equity_usd / agent.starting_cash_usd - 1.0) * 100.0,
                sharpe=metrics.sharpe,
                sortino=metrics.sortino,
                max_drawdown_pct=metrics.max_drawdown_pct or 0.0,
                trades=len(trades),
                win_rate=None if metrics.win_rate_pct is None else metrics.win_rate_pct / 100.0,
                fees_paid=agent.fees_paid_usd,
                funding_paid=agent.funding_paid_usd,
                llm_calls=0 if usage is None else usage.requests,
                cache_hits=0 if usage is None else usage.cache_hits,
                parse_failures=counts.parse_failures,
                rejected_decisions=counts.rejected_decisions,
                failed_cycles=counts.failed_cycles,
                open_positions=len(open_positions),
                prompt_tokens=0 if usage is None else usage.prompt_tokens,
                completion_tokens=0 if usage is None else usage.completion_tokens,
                mean_latency_ms=0.0 if usage is None else usage.mean_latency_ms,
                sharpe_note=metrics.sharpe_note,
                last_at=agent.last_at,
                held_quota=0 if usage is None else usage.held_quota,
                held_not_served=0 if usage is None else usage.held_not_served,
            )
        )
    return sorted(rows, key=lambda row: row.final_equity, reverse=True)


def backtest_summary(
    *,
    run_id: str,
    synthetic: bool = False,
    start: datetime,
    end: datetime,
    cycles: int,
    symbols: Sequence[str],
    buy_and_hold_return_pct: float,
    rows: Sequence[LeaderboardRow],
) -> dict[str, Any]:
    """Return exactly the object `arena backtest --json` prints (README, Backtests)."""
    return {
        "run_id": run_id,
        # True when the candles were synthetic sample data, not market prices.
        "synthetic": synthetic,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "cycles": cycles,
        "symbols": list(symbols),
        "benchmark": {"buy_and_hold_return_pct": _round(buy_and_hold_return_pct)},
        "agents": [row.as_contract() for row in rows],
    }


def equity_frame(engine: Engine, run_id: str) -> pd.DataFrame:
    """Return every agent's account value over time, one column per agent."""
    columns = {}
    for agent in queries.agents(engine, run_id):
        columns[agent.name] = queries.equity_series(engine, agent.agent_id)
    if not columns:
        return pd.DataFrame()
    return pd.DataFrame(columns).sort_index().ffill()


def write_trades_csv(path: Path, trades: Mapping[str, Sequence[ClosedTrade]]) -> None:
    """Write every closed trade of every agent as CSV."""
    fields = [
        "agent",
        "coin",
        "side",
        "quantity",
        "leverage",
        "entry_price",
        "exit_price",
        "opened_at",
        "closed_at",
        "holding_hours",
        "entry_fee_usd",
        "exit_fee_usd",
        "funding_usd",
        "gross_pnl_usd",
        "net_pnl_usd",
        "exit_reason",
    ]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for agent, agent_trades in trades.items():
            for trade in agent_trades:
                writer.writerow(
                    {
                        "agent": agent,
                        "coin": trade.coin,
                        "side": trade.side,
                        "quantity": trade.quantity,
                        "leverage": trade.leverage,
                        "entry_price": trade.entry_price,
                        "exit_price": trade.exit_price,
                        "opened_at": trade.opened_at.isoformat(),
                        "closed_at": trade.closed_at.isoformat(),
                        "holding_hours": round(trade.holding_time.total_seconds() / 3600, 4),
                        "entry_fee_usd": trade.entry_fee_usd,
                        "exit_fee_usd": trade.exit_fee_usd,
                        "funding_usd": trade.funding_usd,
                        "gross_pnl_usd": trade.gross_pnl_usd,
                        "net_pnl_usd": trade.net_pnl_usd,
                        "exit_reason": trade.exit_reason,
                    }
                )


def equity_chart(
    equity: pd.DataFrame,
    *,
    benchmark: pd.Series | None = None,
    title: str = "Total account value",
    returns_pct: Mapping[str, float] | None = None,
    benchmark_return_pct: float | None = None,
    label_suffix: str = "",
) -> Any:
    """Return a matplotlib figure of every agent's account value over the buy-and-hold line.

    The benchmark is drawn first, thin and grey, so an agent that follows it (the
    buy_and_hold baseline pays fees the benchmark does not) stays visible on top; each legend
    entry ends with its final return.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    returns_pct = returns_pct or {}
    figure, axes = plt.subplots(figsize=(11, 5.5), dpi=110)
    if benchmark is not None and not benchmark.empty:
        label = "buy & hold (equal weight, no fees)"
        if benchmark_return_pct is not None:
            label += f": {benchmark_return_pct:+.2f}%"
        axes.plot(
            benchmark.index,
            benchmark.to_numpy(),
            label=label,
            color="0.55",
            linestyle="--",
            linewidth=0.9,
            zorder=1,
        )
    for name in equity.columns:
        label = f"{name}{label_suffix}"
        if name in returns_pct:
            label += f": {returns_pct[name]:+.2f}%"
        axes.plot(equity.index, equity[name], label=label, linewidth=1.6, zorder=3)
    axes.set_title(title)
    axes.set_ylabel("account value (USD)")
    axes.grid(alpha=0.3, zorder=0)
    axes.legend(loc="best", fontsize="small")
    figure.autofmt_xdate()
    figure.tight_layout()
    return figure


def save_chart(path: Path, figure: Any) -> None:
    """Write a figure of `equity_chart` as a PNG at `path`, and free it."""
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path)
    finally:
        plt.close(figure)


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Write `payload` as indented JSON."""
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
