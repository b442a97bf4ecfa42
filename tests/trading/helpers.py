"""Builders shared by the trading tests: intents, candles and the costs the worked examples use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pandas as pd

from app.domain import ExitPlan, OrderIntent, PaperCosts, PositionSide

T0 = datetime(2025, 10, 18, 0, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)

# 5 bps taker fee, 10 bps slippage, 0.5% maintenance margin: round numbers for hand arithmetic.
COSTS = PaperCosts(fee_rate=0.0005, slippage_rate=0.001, maintenance_margin_rate=0.005)


def open_intent(
    side: PositionSide,
    *,
    coin: str = "ETH",
    quantity: float = 1.0,
    leverage: int = 10,
    stop_loss: float | None = None,
    profit_target: float | None = None,
) -> OrderIntent:
    """Return an entry intent with the given exit plan."""
    return OrderIntent(
        coin=coin,
        action="open",
        side=side,
        quantity=quantity,
        leverage=leverage,
        exit_plan=ExitPlan(profit_target=profit_target, stop_loss=stop_loss),
    )


def close_intent(side: PositionSide, *, coin: str = "ETH", quantity: float = 1.0) -> OrderIntent:
    """Return a close intent."""
    return OrderIntent(coin=coin, action="close", side=side, quantity=quantity)


def candles(
    rows: Sequence[tuple[float, float, float, float]],
    *,
    start: datetime = T0,
    step: timedelta = MINUTE,
) -> pd.DataFrame:
    """Return OHLC candles indexed by UTC open time from (open, high, low, close) rows."""
    index = pd.DatetimeIndex([start + i * step for i in range(len(rows))])
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index, dtype=float)
