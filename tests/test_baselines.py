"""The rule-based baselines answer in the models' schema, and the risk checks accept them."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from app.domain import AccountView, CoinSnapshot, ExitPlan, MarketSnapshot, Position
from app.indicators import add_context_indicators, add_intraday_indicators
from app.llm.baselines import BuyAndHoldStrategy, EmaTrendStrategy
from app.ports import DecisionRequest
from app.trading import risk

AT = datetime(2025, 10, 20, tzinfo=UTC)
LIMITS = risk.RiskLimits(max_position_margin_pct=50.0)


def frame(closes: np.ndarray) -> pd.DataFrame:
    index = pd.date_range(end="2025-10-19 20:00", periods=len(closes), freq="4h", tz="UTC")
    return pd.DataFrame(
        {
            "open": closes,
            "high": closes * 1.002,
            "low": closes * 0.998,
            "close": closes,
            "volume": np.full(len(closes), 100.0),
        },
        index=index,
    )


def snapshot(closes: dict[str, np.ndarray]) -> MarketSnapshot:
    coins = {}
    for coin, series in closes.items():
        candles = frame(series)
        coins[coin] = CoinSnapshot(
            coin=coin,
            symbol=f"{coin}/USDT:USDT",
            last_price=float(series[-1]),
            intraday=add_intraday_indicators(candles),
            context=add_context_indicators(candles),
        )
    return MarketSnapshot(at=AT, intraday_timeframe="3m", context_timeframe="4h", coins=coins)


def account(positions: dict[str, Position] | None = None) -> AccountView:
    return AccountView(
        at=AT,
        starting_cash_usd=10_000.0,
        cash_usd=10_000.0,
        margin_usd=0.0,
        unrealized_pnl_usd=0.0,
        realized_pnl_usd=0.0,
        fees_paid_usd=0.0,
        funding_paid_usd=0.0,
        positions=positions or {},
    )


def decide(strategy, market: MarketSnapshot, view: AccountView):  # type: ignore[no-untyped-def]
    request = DecisionRequest(at=AT, snapshot=market, account=view, coins=tuple(market.coins))
    answer = asyncio.run(strategy.decide(request))
    return answer.decisions, risk.check(
        answer.decisions,
        account=view,
        prices=market.prices(),
        rules={},
        limits=LIMITS,
        now=AT,
    )


@pytest.mark.parametrize("coins", [["BTC"], ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE"]])
def test_buy_and_hold_buys_every_coin_within_the_margin_limit(coins: list[str]) -> None:
    """One coin: an equal share would be all the cash, above the 50% limit, so the share is
    capped at 50% x 10,000 x 0.995 = 4,975 USD. Six coins: 10,000 x 0.995 / 6 = 1,658.33 USD."""
    market = snapshot({coin: np.linspace(100, 110, 120) for coin in coins})
    decisions, outcome = decide(BuyAndHoldStrategy(max_position_margin_pct=50.0), market, account())
    assert [d.signal for d in decisions] == ["buy_to_enter"] * len(coins)
    assert [o.status for o in outcome.outcomes] == ["accepted"] * len(coins)
    share = 4_975.0 if len(coins) == 1 else 10_000 * 0.995 / 6
    assert decisions[0].quantity * 110 == pytest.approx(share)
    assert all(d.leverage == 1 for d in decisions)


def test_buy_and_hold_never_sells() -> None:
    market = snapshot({"BTC": np.linspace(100, 50, 120)})
    held = Position(
        coin="BTC",
        side="long",
        quantity=1.0,
        entry_price=100.0,
        leverage=1,
        margin_usd=100.0,
        liquidation_price=0.5,
        opened_at=AT,
        exit_plan=ExitPlan(profit_target=5000.0, stop_loss=2.0),
    )
    decisions, _ = decide(BuyAndHoldStrategy(), market, account({"BTC": held}))
    assert [d.signal for d in decisions] == ["hold"]


def test_ema_trend_enters_with_the_trend_and_closes_when_it_turns() -> None:
    """A steady rise puts EMA20 above EMA50 with the close above EMA20: a long with its stop two
    ATR14 below and its target three ATR14 above the price; a steady fall closes that long."""
    rising = snapshot({"BTC": np.linspace(100, 140, 120)})
    decisions, outcome = decide(EmaTrendStrategy(max_position_margin_pct=50.0), rising, account())
    entry = decisions[0]
    assert entry.signal == "buy_to_enter"
    assert entry.stop_loss < 140 < entry.profit_target
    assert outcome.outcomes[0].status == "accepted"

    held = Position(
        coin="BTC",
        side="long",
        quantity=1.0,
        entry_price=140.0,
        leverage=3,
        margin_usd=46.7,
        liquidation_price=94.0,
        opened_at=AT,
    )
    falling = snapshot({"BTC": np.linspace(140, 100, 120)})
    decisions, _ = decide(EmaTrendStrategy(), falling, account({"BTC": held}))
    assert decisions[0].signal == "close_position"
