"""What one window's backtest hands to the evaluation: per-agent figures and a value curve.

These are plain values (JSON round-trip with `to_json`/`from_json`), so a worker process or a
cluster task can return them and a plan can store them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

import numpy as np

from app.domain import ensure_utc

AgentKind = Literal["agent", "baseline"]

# The value curve of every window is sampled at this many evenly spaced points, both ends
# included, so windows of one length line up point by point in the fan chart.
CURVE_POINTS: Final = 101
BUY_AND_HOLD_MODEL: Final = "buy_and_hold"


@dataclass(frozen=True, slots=True)
class AgentWindowResult:
    """One agent's results over one window.

    `group` is the line of the report the agent belongs to: its name, except for the seeds of
    `baseline:random`, which share one line ("random"). `win_rate` is a fraction (0.5 = half);
    `sharpe` and `win_rate` are None where they are undefined (no spread, no closed trade).
    `curve` is the account value divided by the starting cash at `CURVE_POINTS` evenly spaced
    times from the window's first to its last cycle.
    """

    name: str
    provider: str
    model: str
    group: str
    return_pct: float
    sharpe: float | None
    max_drawdown_pct: float
    win_rate: float | None
    trades: int
    final_equity: float = 0.0
    fees_paid: float = 0.0
    llm_calls: int = 0
    cache_hits: int = 0
    curve: tuple[float, ...] = ()

    @property
    def kind(self) -> AgentKind:
        """Return "baseline" for the rule-based agents, "agent" for the models."""
        return "baseline" if self.provider == "baseline" else "agent"

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON-able dict."""
        return {
            "name": self.name,
            "provider": self.provider,
            "model": self.model,
            "group": self.group,
            "return_pct": self.return_pct,
            "sharpe": _finite_or_none(self.sharpe),
            "max_drawdown_pct": self.max_drawdown_pct,
            "win_rate": _finite_or_none(self.win_rate),
            "trades": self.trades,
            "final_equity": self.final_equity,
            "fees_paid": self.fees_paid,
            "llm_calls": self.llm_calls,
            "cache_hits": self.cache_hits,
            "curve": list(self.curve),
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> AgentWindowResult:
        """Rebuild a result from `to_json`'s dict."""
        return cls(
            name=str(payload["name"]),
            provider=str(payload["provider"]),
            model=str(payload["model"]),
            group=str(payload.get("group") or payload["name"]),
            return_pct=float(payload["return_pct"]),
            sharpe=_float_or_none(payload.get("sharpe")),
            max_drawdown_pct=float(payload["max_drawdown_pct"]),
            win_rate=_float_or_none(payload.get("win_rate")),
            trades=int(payload["trades"]),
            final_equity=float(payload.get("final_equity", 0.0)),
            fees_paid=float(payload.get("fees_paid", 0.0)),
            llm_calls=int(payload.get("llm_calls", 0)),
            cache_hits=int(payload.get("cache_hits", 0)),
            curve=tuple(float(value) for value in payload.get("curve", ())),
        )


@dataclass(frozen=True, slots=True)
class WindowResult:
    """Everything an evaluation keeps of one window's backtest."""

    index: int
    start: datetime
    end: datetime
    interval: str
    cycles: int
    buy_and_hold_return_pct: float
    agents: tuple[AgentWindowResult, ...]
    run_id: str | None = None
    symbols: tuple[str, ...] = ()

    def agent(self, name: str) -> AgentWindowResult:
        """Return the result of the agent called `name`."""
        for result in self.agents:
            if result.name == name:
                return result
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON-able dict."""
        return {
            "index": self.index,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "interval": self.interval,
            "cycles": self.cycles,
            "buy_and_hold_return_pct": self.buy_and_hold_return_pct,
            "run_id": self.run_id,
            "symbols": list(self.symbols),
            "agents": [agent.to_json() for agent in self.agents],
        }

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> WindowResult:
        """Rebuild a result from `to_json`'s dict."""
        return cls(
            index=int(payload["index"]),
            start=ensure_utc(datetime.fromisoformat(str(payload["start"]))),
            end=ensure_utc(datetime.fromisoformat(str(payload["end"]))),
            interval=str(payload["interval"]),
            cycles=int(payload["cycles"]),
            buy_and_hold_return_pct=float(payload["buy_and_hold_return_pct"]),
            agents=tuple(AgentWindowResult.from_json(agent) for agent in payload["agents"]),
            run_id=None if payload.get("run_id") is None else str(payload["run_id"]),
            symbols=tuple(str(coin) for coin in payload.get("symbols", ())),
        )


def sample_curve(
    times_ns: Sequence[int] | np.ndarray,
    values: Sequence[float] | np.ndarray,
    *,
    start_ns: int,
    end_ns: int,
    starting_cash_usd: float,
    points: int = CURVE_POINTS,
) -> tuple[float, ...]:
    """Return the account value / starting cash at `points` evenly spaced times in the window.

    Each point takes the last value recorded at or before it (the starting cash before the
    first record).
    """
    stamps = np.asarray(times_ns, dtype=np.int64)
    series = np.asarray(values, dtype=np.float64)
    grid = np.linspace(start_ns, end_ns, points).round().astype(np.int64)
    at = np.searchsorted(stamps, grid, side="right") - 1
    sampled = np.where(at >= 0, series[np.clip(at, 0, None)], starting_cash_usd)
    return tuple(float(value) for value in sampled / starting_cash_usd)


def _float_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value
