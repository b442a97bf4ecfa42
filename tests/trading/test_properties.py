"""Properties of risk.check fed into the paper account over random cycles and candles.

Every step is either a decision cycle (random decisions -> risk.check -> fills at the checked
price) or a market move (random candles and maybe a funding settlement per coin -> exits). After
each step the books are recomputed independently of the account's own totals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.decisions import TradeDecision
from app.domain import SIGNALS, MarketRules, PaperCosts, Position
from app.trading.paper import Execution, MonitorResult, PaperAccount
from app.trading.risk import RiskLimits, check
from tests.trading.helpers import MINUTE, T0

COINS = ("BTC", "ETH", "SOL")
START_PRICES = {"BTC": 60_000.0, "ETH": 2_000.0, "SOL": 150.0}
START_USD = 10_000.0
RULES = {
    "BTC": MarketRules("BTC/USDC:USDC", amount_step=0.0001, min_notional_usd=10.0),
    "ETH": MarketRules("ETH/USDC:USDC", amount_step=0.001, min_notional_usd=10.0),
    "SOL": MarketRules("SOL/USDC:USDC", amount_step=0.01, min_notional_usd=10.0),
}


@dataclass
class Ledger:
    """What the events say happened, kept apart from the account's own totals."""

    realized_usd: float = 0.0
    fees_usd: float = 0.0
    funding_usd: float = 0.0
    entries_at: list[datetime] = field(default_factory=list)

    def cash_change(self, execution: Execution) -> float:
        fill, position = execution.fill, execution.position
        self.fees_usd += fill.fee_usd
        if execution.closed_trade is None:
            return -position.margin_usd - fill.fee_usd
        self.realized_usd += fill.realized_pnl_usd
        return position.margin_usd + fill.realized_pnl_usd - fill.fee_usd


def unrealized_usd(positions: dict[str, Position], prices: dict[str, float]) -> float:
    return sum(
        (1 if p.side == "long" else -1) * (prices[coin] - p.entry_price) * p.quantity
        for coin, p in positions.items()
    )


def close_to(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-9 * max(START_USD, abs(a), abs(b))


limits_strategy = st.builds(
    RiskLimits,
    max_leverage=st.sampled_from([5, 20, 50]),
    max_position_margin_pct=st.sampled_from([10.0, 50.0, 100.0]),
    max_open_positions=st.sampled_from([None, 1, 2]),
    max_entries_per_hour=st.sampled_from([None, 1, 3]),
    costs=st.builds(
        PaperCosts,
        fee_rate=st.sampled_from([0.0, 0.00045, 0.002]),
        slippage_rate=st.sampled_from([0.0, 0.0001, 0.003]),
        maintenance_margin_rate=st.sampled_from([0.0, 0.005, 0.02]),
    ),
)


ENTRY_SIGNALS = st.sampled_from(["buy_to_enter", "sell_to_enter"])
# Mostly plausible entries, with enough malformed ones that every rejection path is visited.
LEVERAGE = st.integers(1, 30)
LEVEL_AWAY = st.floats(-0.05, 0.4)


def draw_decisions(data: st.DataObject, prices: dict[str, float]) -> list[TradeDecision]:
    decisions = []
    coins = data.draw(st.lists(st.sampled_from(COINS), min_size=1, max_size=3, unique=True))
    if data.draw(st.integers(0, 9)) == 0:
        coins.append(coins[0])  # now and then a second decision for one coin
    for coin in coins:
        signal = data.draw(st.one_of(ENTRY_SIGNALS, st.sampled_from(SIGNALS)))
        price = prices[coin]
        sign = 1.0 if signal == "buy_to_enter" else -1.0
        fields: dict[str, Any] = {}
        if signal in ("buy_to_enter", "sell_to_enter"):
            share = data.draw(st.floats(0.0005, 0.8))
            leverage = data.draw(LEVERAGE)
            stop_away = data.draw(LEVEL_AWAY)
            target_away = data.draw(LEVEL_AWAY)
            fields = {
                "quantity": share * START_USD * leverage / price,
                "leverage": leverage,
                "stop_loss": max(price * (1 - sign * stop_away), 1e-6),
                "profit_target": max(price * (1 + sign * target_away), 1e-6),
            }
        decisions.append(TradeDecision(coin=coin, signal=signal, **fields))
    return decisions


def draw_candles(data: st.DataObject, price: float, start: datetime) -> pd.DataFrame:
    rows = []
    close = price
    for _ in range(data.draw(st.integers(1, 4))):
        open_ = close * (1 + data.draw(st.floats(-0.08, 0.08)))
        close = open_ * (1 + data.draw(st.floats(-0.2, 0.2)))
        high = max(open_, close) * (1 + data.draw(st.floats(0.0, 0.05)))
        low = min(open_, close) * (1 - data.draw(st.floats(0.0, 0.05)))
        rows.append((open_, high, low, close))
    index = pd.DatetimeIndex([start + i * MINUTE for i in range(len(rows))])
    return pd.DataFrame(rows, columns=["open", "high", "low", "close"], index=index)


def run_cycle(
    data: st.DataObject,
    account: PaperAccount,
    ledger: Ledger,
    limits: RiskLimits,
    prices: dict[str, float],
    now: datetime,
) -> float:
    view = account.view(prices, now)
    outcome = check(
        draw_decisions(data, prices),
        account=view,
        prices=prices,
        rules=RULES,
        limits=limits,
        now=now,
        recent_entries_at=ledger.entries_at,
    )
    cash_change = 0.0
    cash_checked = view.cash_usd
    for intent in outcome.intents:
        # Rounding only ever takes quantity away, and says so.
        if intent.action == "open" and intent.requested_quantity is not None:
            assert intent.quantity <= intent.requested_quantity
            assert (intent.quantity == intent.requested_quantity) or "rounded down" in intent.note
            assert intent.quantity * prices[intent.coin] >= RULES[intent.coin].min_notional_usd
        result = account.execute(intent, reference_price=prices[intent.coin], at=now)
        # A checked intent always fills at the price it was checked at.
        assert isinstance(result, Execution), result
        cash_change += ledger.cash_change(result)
        event(f"filled {intent.action}")
        if result.closed_trade is None:
            position = result.position
            ledger.entries_at.append(now)
            assert position.leverage <= limits.max_leverage
            assert position.margin_usd <= limits.max_position_margin_pct / 100 * view.equity_usd
            assert position.margin_usd + result.fill.fee_usd <= cash_checked + 1e-9
            cash_checked -= position.margin_usd + result.fill.fee_usd
    if limits.max_open_positions is not None:
        assert len(account.positions) <= limits.max_open_positions
    if limits.max_entries_per_hour is not None:
        recent = [at for at in ledger.entries_at if now - timedelta(hours=1) < at <= now]
        assert len(recent) <= limits.max_entries_per_hour
    return cash_change


def run_market(
    data: st.DataObject,
    account: PaperAccount,
    ledger: Ledger,
    prices: dict[str, float],
    now: datetime,
) -> tuple[float, datetime]:
    cash_change = 0.0
    end = now
    for coin in COINS:
        block = draw_candles(data, prices[coin], now)
        funding = None
        if data.draw(st.booleans()):
            settled_at = now + data.draw(st.integers(0, len(block) - 1)) * MINUTE
            rate = data.draw(st.floats(-0.001, 0.001))
            funding = pd.DataFrame({"rate": [rate]}, index=pd.DatetimeIndex([settled_at]))
        result: MonitorResult = account.apply_candles(coin, block, funding=funding)
        for payment in result.funding:
            event("funding settled")
            ledger.funding_usd += payment.amount_usd
            cash_change -= payment.amount_usd
        if result.exit is not None:
            trade = result.exit.closed_trade
            assert trade is not None
            event(f"exit by {trade.exit_reason}")
            # Isolated margin: a position never loses more than its margin at exit.
            assert (
                trade.gross_pnl_usd - trade.exit_fee_usd >= -result.exit.position.margin_usd - 1e-9
            )
            cash_change += ledger.cash_change(result.exit)
        prices[coin] = float(block["close"].iloc[-1])
        end = max(end, block.index[-1].to_pydatetime() + MINUTE)
    return cash_change, end


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), limits=limits_strategy)
def test_books_balance_and_limits_hold_over_random_cycles(
    data: st.DataObject, limits: RiskLimits
) -> None:
    # The account and the risk checks share one set of costs, as the engine builds them.
    account = PaperAccount(START_USD, costs=limits.costs)
    ledger = Ledger()
    prices = dict(START_PRICES)
    now = T0
    for _ in range(data.draw(st.integers(2, 12))):
        cash_before = account.cash_usd
        if data.draw(st.booleans()):
            cash_change = run_cycle(data, account, ledger, limits, prices, now)
        else:
            cash_change, now = run_market(data, account, ledger, prices, now)
        now += 3 * MINUTE

        # Realized PnL, fees, funding and locked margin explain every change of cash.
        assert close_to(account.cash_usd - cash_before, cash_change)
        view = account.view(prices, now)
        positions = dict(account.positions)
        margin = sum(p.margin_usd for p in positions.values())
        upnl = unrealized_usd(positions, prices)
        # Account value = cash + margin + unrealized PnL, and the totals match the events.
        assert close_to(view.equity_usd, account.cash_usd + margin + upnl)
        assert close_to(view.fees_paid_usd, ledger.fees_usd)
        assert close_to(view.realized_pnl_usd, ledger.realized_usd)
        assert close_to(view.funding_paid_usd, ledger.funding_usd)
        assert close_to(
            view.equity_usd,
            START_USD + ledger.realized_usd - ledger.fees_usd - ledger.funding_usd + upnl,
        )
        # A restart rebuilds exactly the same account.
        assert PaperAccount.restore(account.state(), costs=limits.costs).state() == account.state()


@pytest.mark.parametrize("side", ["long", "short"])
def test_property_helpers_detect_a_broken_ledger(side: str) -> None:
    """The checker itself can fail: a ledger that forgets the entry fee disagrees with cash."""
    account = PaperAccount(START_USD, costs=PaperCosts(fee_rate=0.001, slippage_rate=0.0))
    decision = TradeDecision(
        coin="ETH",
        signal="buy_to_enter" if side == "long" else "sell_to_enter",
        quantity=1.0,
        leverage=5,
        stop_loss=1900.0 if side == "long" else 2100.0,
        profit_target=2100.0 if side == "long" else 1900.0,
    )
    outcome = check(
        [decision],
        account=account.view(START_PRICES, T0),
        prices=START_PRICES,
        rules={},
        limits=RiskLimits(costs=PaperCosts(fee_rate=0.001, slippage_rate=0.0)),
        now=T0,
    )
    result = account.execute(outcome.intents[0], reference_price=2000.0, at=T0)
    assert isinstance(result, Execution)

    forgetful = -result.position.margin_usd
    assert not close_to(account.cash_usd - START_USD, forgetful)
    assert close_to(account.cash_usd - START_USD, Ledger().cash_change(result))
