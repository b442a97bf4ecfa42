"""Rule-based agents under the provider name `baseline`, answering in the models' schema.

They go through the same risk checks, paper exchange and records as the LLMs, so every report can
set the models beside them:
- `buy_and_hold`: nof1's benchmark line. Equal-weight long of every coin at 1x on its first cycle,
  then holds forever (its stop and target are placed so far away they never trigger in practice).
- `ema_trend`: a simple trend follower on the 4h context candles. Long while EMA20 > EMA50 and
  the close is above EMA20, short in the mirror case, 3x leverage, stop 2 ATR14 and target 3 ATR14
  away, 1% of account value at risk per trade; closes when the trend flips against it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from app.decisions import TradeDecision
from app.errors import ConfigError
from app.ports import DecisionRequest, StrategyAnswer

# Far enough that no real market reaches them, near enough to stay valid prices.
_HODL_STOP_FRACTION: Final = 0.02
_HODL_TARGET_MULTIPLE: Final = 50.0
# Leave room for the taker fee and slippage so the risk check's cash test passes.
_HODL_CASH_BUFFER: Final = 0.995

_TREND_LEVERAGE: Final = 3
_TREND_RISK_FRACTION: Final = 0.01
_TREND_STOP_ATR: Final = 2.0
_TREND_TARGET_ATR: Final = 3.0


def _hold(coin: str) -> TradeDecision:
    return TradeDecision(coin=coin, signal="hold")


class BuyAndHoldStrategy:
    """Buy every coin with an equal share of the cash at 1x on the first cycle; never sell."""

    uses_prompt = False

    def __init__(
        self, name: str = "buy_and_hold", *, max_position_margin_pct: float = 100.0
    ) -> None:
        self.name = name
        self.max_position_margin_pct = max_position_margin_pct

    async def decide(self, request: DecisionRequest) -> StrategyAnswer:
        """Enter every coin on a fresh account; hold afterwards."""
        account = request.account
        fresh = not account.positions and account.fees_paid_usd == 0.0
        if not fresh:
            return StrategyAnswer(decisions=tuple(_hold(coin) for coin in request.coins))
        # An equal share of the cash, but never more margin than one position may lock (with one
        # or two coins the equal share alone would exceed it and every entry be refused).
        share_usd = min(
            account.cash_usd * _HODL_CASH_BUFFER / len(request.coins),
            account.equity_usd * self.max_position_margin_pct / 100 * _HODL_CASH_BUFFER,
        )
        decisions = []
        for coin in request.coins:
            price = request.snapshot.price(coin)
            decisions.append(
                TradeDecision(
                    coin=coin,
                    signal="buy_to_enter",
                    quantity=share_usd / price,
                    leverage=1,
                    profit_target=price * _HODL_TARGET_MULTIPLE,
                    stop_loss=price * _HODL_STOP_FRACTION,
                    invalidation_condition="never: buy-and-hold benchmark",
                    confidence=1.0,
                    risk_usd=share_usd,
                    justification="Benchmark: equal-weight buy and hold at 1x.",
                )
            )
        return StrategyAnswer(decisions=tuple(decisions))


class EmaTrendStrategy:
    """Follow the 4h EMA20/EMA50 trend with ATR-based stops and targets."""

    uses_prompt = False

    def __init__(self, name: str = "ema_trend", *, max_position_margin_pct: float = 100.0) -> None:
        self.name = name
        self.max_position_margin_pct = max_position_margin_pct

    async def decide(self, request: DecisionRequest) -> StrategyAnswer:
        """Enter with the trend when flat, close when the trend turns against the position."""
        decisions = [self._decide_coin(request, coin) for coin in request.coins]
        return StrategyAnswer(decisions=tuple(decisions))

    def _decide_coin(self, request: DecisionRequest, coin: str) -> TradeDecision:
        snap = request.snapshot.coins[coin]
        context = snap.context
        if context.empty:
            return _hold(coin)
        last = context.iloc[-1]
        ema20, ema50, atr14 = float(last["ema20"]), float(last["ema50"]), float(last["atr14"])
        close = float(last["close"])
        if any(math.isnan(value) for value in (ema20, ema50, atr14)) or atr14 <= 0:
            return _hold(coin)
        trend = 1 if ema20 > ema50 else -1 if ema20 < ema50 else 0
        position = request.account.positions.get(coin)
        if position is not None:
            if trend == -position.direction:
                return TradeDecision(
                    coin=coin,
                    signal="close_position",
                    justification="4h EMA20/EMA50 trend turned against the position.",
                    confidence=0.6,
                )
            return _hold(coin)
        if trend == 0 or (trend > 0) != (close > ema20):
            return _hold(coin)
        price = snap.last_price
        stop_distance = _TREND_STOP_ATR * atr14
        equity = request.account.equity_usd
        quantity = _TREND_RISK_FRACTION * equity / stop_distance
        # Never commit more than an equal share of the cash, nor more than the limit, as margin.
        margin_cap_usd = min(
            request.account.cash_usd / len(request.coins),
            equity * self.max_position_margin_pct / 100,
        )
        max_quantity = margin_cap_usd * _TREND_LEVERAGE / price
        quantity = min(quantity, max_quantity * _HODL_CASH_BUFFER)
        if quantity <= 0 or stop_distance >= price:
            return _hold(coin)
        long = trend > 0
        return TradeDecision(
            coin=coin,
            signal="buy_to_enter" if long else "sell_to_enter",
            quantity=quantity,
            leverage=_TREND_LEVERAGE,
            profit_target=price + (1 if long else -1) * _TREND_TARGET_ATR * atr14,
            stop_loss=price - (1 if long else -1) * stop_distance,
            invalidation_condition=(f"4h EMA20 crosses {'below' if long else 'above'} EMA50"),
            confidence=0.5,
            risk_usd=_TREND_RISK_FRACTION * equity,
            justification=(
                f"4h trend {'up' if long else 'down'}: EMA20 {ema20:.6g} vs EMA50 {ema50:.6g}, "
                f"close {close:.6g}."
            ),
        )


BASELINES: Final[dict[str, Callable[..., BuyAndHoldStrategy | EmaTrendStrategy]]] = {
    "buy_and_hold": BuyAndHoldStrategy,
    "ema_trend": EmaTrendStrategy,
}


def build_baseline(
    name: str, model: str, *, max_position_margin_pct: float = 100.0
) -> BuyAndHoldStrategy | EmaTrendStrategy:
    """Return the baseline `model` (e.g. `buy_and_hold`) for the agent called `name`."""
    factory = BASELINES.get(model)
    if factory is None:
        raise ConfigError(
            f"agent {name!r}: unknown baseline {model!r}; use one of {', '.join(BASELINES)}"
        )
    return factory(name, max_position_margin_pct=max_position_margin_pct)
