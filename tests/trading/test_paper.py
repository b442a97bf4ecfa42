"""The paper perpetuals account: fills, exits on candles, liquidation, funding, restart.

Every worked example uses fee 5 bps, slippage 10 bps, maintenance margin rate 0.5%, starting
cash 10,000 USD, 1 ETH at leverage 10 entered at a reference price of 2,000:
- long:  fill 2000 x 1.001 = 2002, margin 200.2, entry fee 1.001, cash 9,798.799,
         liquidation 2002 x (1 - 0.1 + 0.005) = 1,811.81;
- short: fill 2000 x 0.999 = 1998, margin 199.8, entry fee 0.999, cash 9,799.201,
         liquidation 1998 x (1 + 0.1 - 0.005) = 2,187.81.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from app.domain import AccountState, FillReason, PositionSide, Rejection, liquidation_price
from app.errors import DataUnavailableError, InvariantError
from app.trading.paper import Execution, PaperAccount, find_first_exit
from tests.trading.helpers import COSTS, MINUTE, T0, candles, close_intent, open_intent

START_USD = 10_000.0


def opened(
    side: PositionSide, *, stop_loss: float | None = None, profit_target: float | None = None
) -> PaperAccount:
    account = PaperAccount(START_USD, costs=COSTS)
    intent = open_intent(side, stop_loss=stop_loss, profit_target=profit_target)
    result = account.execute(intent, reference_price=2000.0, at=T0)
    assert isinstance(result, Execution)
    return account


@pytest.mark.parametrize(
    ("side", "exit_ref", "entry_fill", "exit_fill", "gross", "fees", "net"),
    [
        ("long", 2100.0, 2002.0, 2097.9, 95.9, 1.001 + 1.04895, 93.85005),
        ("short", 1900.0, 1998.0, 1901.9, 96.1, 0.999 + 0.95095, 94.15005),
    ],
)
def test_round_trip_pays_fees_and_slippage_on_both_fills(
    side: PositionSide,
    exit_ref: float,
    entry_fill: float,
    exit_fill: float,
    gross: float,
    fees: float,
    net: float,
) -> None:
    """Long: buy 1 at 2000 x 1.001 = 2002 (fee 1.001), sell at 2100 x 0.999 = 2097.9 (fee
    2097.9 x 0.0005 = 1.04895); gross 95.9, net 95.9 - 2.04995 = 93.85005.
    Short: sell 1 at 2000 x 0.999 = 1998 (fee 0.999), buy at 1900 x 1.001 = 1901.9 (fee 0.95095);
    gross 96.1, net 96.1 - 1.94995 = 94.15005. Cash ends at 10,000 + net; nothing stays locked.
    """
    account = PaperAccount(START_USD, costs=COSTS)
    entry = account.execute(open_intent(side), reference_price=2000.0, at=T0)
    closed = account.execute(
        close_intent(side), reference_price=exit_ref, at=T0 + timedelta(hours=2)
    )

    assert isinstance(entry, Execution) and isinstance(closed, Execution)
    assert entry.fill.price == pytest.approx(entry_fill)
    assert entry.position.margin_usd == pytest.approx(entry_fill / 10)
    assert closed.fill.price == pytest.approx(exit_fill)
    trade = closed.closed_trade
    assert trade is not None
    assert trade.gross_pnl_usd == pytest.approx(gross)
    assert trade.entry_fee_usd + trade.exit_fee_usd == pytest.approx(fees)
    assert trade.net_pnl_usd == pytest.approx(net)
    assert trade.exit_reason == "close_position"
    assert trade.holding_time == timedelta(hours=2)
    assert account.cash_usd == pytest.approx(START_USD + net)
    view = account.view({}, T0)
    assert view.equity_usd == pytest.approx(START_USD + net)
    assert view.realized_pnl_usd == pytest.approx(gross)
    assert view.fees_paid_usd == pytest.approx(fees)


@pytest.mark.parametrize(
    ("side", "rows", "reason", "index", "trigger", "exit_fill", "gross", "exit_fee"),
    [
        # Long, stop 1950, target 2100.
        pytest.param(
            "long",
            [(2000, 2010, 1990, 1995), (1990, 1995, 1940, 1945)],
            "stop_loss", 1, 1950.0, 1948.05, -53.95, 0.974025,
            id="long-stop-inside-candle",
        ),
        pytest.param(
            "long",
            [(2000, 2010, 1990, 2005), (2010, 2105, 2005, 2100)],
            "take_profit", 1, 2100.0, 2097.9, 95.9, 1.04895,
            id="long-target-inside-candle",
        ),
        pytest.param(
            "long",
            [(2000, 2110, 1940, 2000)],
            "stop_loss", 0, 1950.0, 1948.05, -53.95, 0.974025,
            id="long-both-in-one-candle-stop-first",
        ),
        pytest.param(
            "long",
            [(2000, 2010, 1990, 1995), (1930, 1960, 1920, 1950)],
            "stop_loss", 1, 1930.0, 1928.07, -73.93, 0.964035,
            id="long-gap-through-stop-fills-at-open",
        ),
        pytest.param(
            "long",
            [(2000, 2010, 1990, 2005), (2120, 2130, 1940, 2125)],
            "take_profit", 1, 2120.0, 2117.88, 115.88, 1.05894,
            id="long-gap-through-target-fills-at-open",
        ),
        # Short, stop 2050, target 1900.
        pytest.param(
            "short",
            [(2000, 2010, 1990, 2005), (2010, 2060, 2000, 2055)],
            "stop_loss", 1, 2050.0, 2052.05, -54.05, 1.026025,
            id="short-stop-inside-candle",
        ),
        pytest.param(
            "short",
            [(1990, 1995, 1890, 1895)],
            "take_profit", 0, 1900.0, 1901.9, 96.1, 0.95095,
            id="short-target-inside-candle",
        ),
        pytest.param(
            "short",
            [(2000, 2060, 1890, 2000)],
            "stop_loss", 0, 2050.0, 2052.05, -54.05, 1.026025,
            id="short-both-in-one-candle-stop-first",
        ),
        pytest.param(
            "short",
            [(2000, 2010, 1990, 2005), (2070, 2080, 2060, 2075)],
            "stop_loss", 1, 2070.0, 2072.07, -74.07, 1.036035,
            id="short-gap-through-stop-fills-at-open",
        ),
    ],
)  # fmt: skip
def test_exit_on_candle_fills_at_level_or_open_with_slippage(
    side: PositionSide,
    rows: list[tuple[float, float, float, float]],
    reason: FillReason,
    index: int,
    trigger: float,
    exit_fill: float,
    gross: float,
    exit_fee: float,
) -> None:
    """Exits trigger on high/low; the fill is the level (or the open on a gap) moved against
    the trader by 10 bps, with the 5 bps fee on the exit notional.
    Long (entry 2002): stop 1950 -> 1950 x 0.999 = 1948.05, gross 1948.05 - 2002 = -53.95, fee
    0.974025; target 2100 -> 2097.9, gross 95.9; gap open 1930 -> 1928.07, gross -73.93; gap open
    2120 above the target -> 2117.88, gross 115.88 (the open comes first, so the same candle's
    low under the stop does not matter). Short (entry 1998): stop 2050 -> 2052.05,
    gross -54.05; target 1900 -> 1901.9, gross 96.1; gap open 2070 -> 2072.07, gross -74.07.
    When the stop and the target are both inside one candle the stop wins. Cash after the exit =
    cash after entry + margin + gross - exit fee.
    """
    stop, target = (1950.0, 2100.0) if side == "long" else (2050.0, 1900.0)
    account = opened(side, stop_loss=stop, profit_target=target)
    position = account.positions["ETH"]
    cash_before = account.cash_usd

    result = account.apply_candles("ETH", candles(rows))

    execution = result.exit
    assert execution is not None and execution.closed_trade is not None
    assert execution.fill.reason == reason
    assert execution.fill.reference_price == pytest.approx(trigger)
    assert execution.fill.price == pytest.approx(exit_fill)
    assert execution.fill.filled_at == T0 + index * MINUTE
    assert execution.closed_trade.gross_pnl_usd == pytest.approx(gross)
    assert execution.fill.fee_usd == pytest.approx(exit_fee)
    assert account.cash_usd == pytest.approx(cash_before + position.margin_usd + gross - exit_fee)
    assert "ETH" not in account.positions


@pytest.mark.parametrize(
    ("side", "stop", "rows", "liq", "gross", "liq_fee"),
    [
        pytest.param(
            "long", 1800.0, [(2000, 2005, 1805, 1810)], 1811.81, -190.19, 10.01,
            id="long-low-reaches-liquidation",
        ),
        pytest.param(
            "long", 1800.0, [(2000, 2005, 1990, 2000), (1700, 1710, 1690, 1700)],
            1811.81, -190.19, 10.01,
            id="long-gap-past-liquidation-loses-only-the-margin",
        ),
        pytest.param(
            "long", 1900.0, [(1750, 1760, 1740, 1750)], 1811.81, -190.19, 10.01,
            id="long-gap-past-stop-and-liquidation",
        ),
        pytest.param(
            "short", 2200.0, [(2000, 2190, 1995, 2100)], 2187.81, -189.81, 9.99,
            id="short-high-reaches-liquidation",
        ),
    ],
)  # fmt: skip
def test_liquidation_at_formula_price_costs_exactly_the_margin(
    side: PositionSide,
    stop: float,
    rows: list[tuple[float, float, float, float]],
    liq: float,
    gross: float,
    liq_fee: float,
) -> None:
    """Long: liq = 2002 x (1 - 1/10 + 0.005) = 1811.81; gross (1811.81 - 2002) x 1 = -190.19;
    the 10.01 left of the 200.2 margin (0.005 x 2002) is the liquidation fee, so cash does not
    move (margin 200.2 back, -190.19, -10.01) and the trade loses margin + entry fee = 201.201.
    Short: liq = 1998 x (1 + 1/10 - 0.005) = 2187.81; gross -189.81; fee 9.99 (0.005 x 1998);
    loses 199.8 + 0.999 = 200.799. A gap past the level changes nothing: isolated margin.
    """
    target = 2500.0 if side == "long" else 1500.0
    account = opened(side, stop_loss=stop, profit_target=target)
    position = account.positions["ETH"]
    assert position.liquidation_price == pytest.approx(liq)
    cash_before = account.cash_usd

    result = account.apply_candles("ETH", candles(rows))

    assert result.exit is not None and result.exit.closed_trade is not None
    trade = result.exit.closed_trade
    assert trade.exit_reason == "liquidation"
    assert trade.exit_price == pytest.approx(liq)
    assert trade.gross_pnl_usd == pytest.approx(gross)
    assert trade.exit_fee_usd == pytest.approx(liq_fee)
    assert trade.net_pnl_usd == pytest.approx(-(position.margin_usd + position.entry_fee_usd))
    assert account.cash_usd == pytest.approx(cash_before)


def test_stop_nearer_than_liquidation_exits_first_in_the_same_candle() -> None:
    """Long, stop 1850 above the 1811.81 liquidation, candle low 1805: the price meets the stop
    first, fill 1850 x 0.999 = 1848.15 (still above the liquidation price)."""
    account = opened("long", stop_loss=1850.0, profit_target=2500.0)

    result = account.apply_candles("ETH", candles([(2000, 2005, 1805, 1810)]))

    assert result.exit is not None
    assert result.exit.fill.reason == "stop_loss"
    assert result.exit.fill.price == pytest.approx(1848.15)


def test_close_position_past_the_liquidation_price_is_a_liquidation() -> None:
    """A close at 1700 (below the long's 1811.81 liquidation) cannot lose more than the margin."""
    account = opened("long", stop_loss=1800.0, profit_target=2500.0)

    result = account.execute(close_intent("long"), reference_price=1700.0, at=T0 + MINUTE)

    assert isinstance(result, Execution) and result.closed_trade is not None
    assert result.fill.reason == "liquidation"
    assert result.closed_trade.net_pnl_usd == pytest.approx(-201.201)


def test_candles_before_the_entry_are_ignored() -> None:
    """A live entry at 00:02:30 must not be stopped by the 00:02 candle's low, which may have
    come before the fill; the 00:03 candle is the first one that counts."""
    account = PaperAccount(START_USD, costs=COSTS)
    account.execute(
        open_intent("long", stop_loss=1950.0, profit_target=2100.0),
        reference_price=2000.0,
        at=T0 + timedelta(minutes=2, seconds=30),
    )
    rows = [(2000, 2001, 1999, 2000), (2000, 2001, 1999, 2000), (2000, 2000, 1900, 1990)]

    assert account.apply_candles("ETH", candles(rows)).exit is None
    later = candles([(1990, 1995, 1940, 1945)], start=T0 + 3 * MINUTE)
    result = account.apply_candles("ETH", later)
    assert result.exit is not None and result.exit.fill.filled_at == T0 + 3 * MINUTE


@pytest.mark.parametrize(
    ("side", "first_usd", "second_usd"),
    [("long", 0.201, -0.398), ("short", -0.201, 0.398)],
)
def test_two_funding_settlements_with_positive_and_negative_rates(
    side: PositionSide, first_usd: float, second_usd: float
) -> None:
    """Payment = side x rate x mark x quantity, > 0 paid by the account.
    +0.01% at mark 2010: long pays 1 x 0.0001 x 2010 x 1 = 0.201, the short receives it.
    -0.02% at mark 1990: long receives 1 x -0.0002 x 1990 = -0.398, the short pays 0.398.
    The totals (long -0.197, short +0.197) sit on the position, the account and the trade.
    """
    account = opened(side)
    cash_after_entry = account.cash_usd

    first = account.settle_funding("ETH", rate=0.0001, mark_price=2010.0, at=T0 + 8 * 60 * MINUTE)
    second = account.settle_funding(
        "ETH", rate=-0.0002, mark_price=1990.0, at=T0 + 16 * 60 * MINUTE
    )

    assert first is not None and second is not None
    assert first.amount_usd == pytest.approx(first_usd)
    assert second.amount_usd == pytest.approx(second_usd)
    total = first_usd + second_usd
    assert account.positions["ETH"].funding_usd == pytest.approx(total)
    assert account.cash_usd == pytest.approx(cash_after_entry - total)
    assert account.view({"ETH": 2000.0}, T0).funding_paid_usd == pytest.approx(total)
    closed = account.execute(close_intent(side), reference_price=2000.0, at=T0 + 17 * 60 * MINUTE)
    assert isinstance(closed, Execution) and closed.closed_trade is not None
    trade = closed.closed_trade
    assert trade.funding_usd == pytest.approx(total)
    assert trade.net_pnl_usd == pytest.approx(
        trade.gross_pnl_usd - trade.entry_fee_usd - trade.exit_fee_usd - total
    )


def test_settle_funding_without_a_position_pays_nothing() -> None:
    account = PaperAccount(START_USD, costs=COSTS)

    assert account.settle_funding("ETH", rate=0.001, mark_price=2000.0, at=T0) is None
    assert account.cash_usd == START_USD


def test_apply_candles_settles_funding_only_while_the_position_is_open() -> None:
    """Entry at 00:00. Settlements: 23:00 the day before and 00:00 (not held yet: skipped),
    00:02 (+0.0001, no mark: the 00:02 candle's open 2010 -> pays 0.201), 00:03 (-0.0002 at mark
    1990 -> receives 0.398; it precedes the 00:03 candle, which hits the stop), 00:04 (after the
    exit: skipped). The trade carries 0.201 - 0.398 = -0.197.
    """
    account = opened("long", stop_loss=1950.0, profit_target=2100.0)
    rows = [
        (2000, 2005, 1995, 2000),
        (2000, 2005, 1995, 2010),
        (2010, 2015, 2005, 2010),
        (2000, 2005, 1940, 1945),
        (1945, 1950, 1940, 1945),
    ]
    funding = pd.DataFrame(
        {
            "rate": [0.0005, 0.0005, 0.0001, -0.0002, 0.0003],
            "mark_price": [2000.0, 2000.0, np.nan, 1990.0, 1945.0],
        },
        index=pd.DatetimeIndex(
            [T0 - 60 * MINUTE, T0, T0 + 2 * MINUTE, T0 + 3 * MINUTE, T0 + 4 * MINUTE]
        ),
    )

    result = account.apply_candles("ETH", candles(rows), funding=funding)

    assert [p.settled_at for p in result.funding] == [T0 + 2 * MINUTE, T0 + 3 * MINUTE]
    assert [p.amount_usd for p in result.funding] == pytest.approx([0.201, -0.398])
    assert result.exit is not None and result.exit.closed_trade is not None
    assert result.exit.closed_trade.funding_usd == pytest.approx(-0.197)


def test_restore_from_state_gives_the_same_account() -> None:
    account = opened("long", stop_loss=1950.0, profit_target=2100.0)
    account.execute(
        open_intent("short", coin="BTC", quantity=0.01), reference_price=100_000.0, at=T0
    )
    account.settle_funding("ETH", rate=0.0001, mark_price=2010.0, at=T0 + 60 * MINUTE)

    restored = PaperAccount.restore(account.state(), costs=COSTS)

    assert restored.state() == account.state()
    prices = {"ETH": 2050.0, "BTC": 99_000.0}
    assert restored.view(prices, T0) == account.view(prices, T0)


def test_state_from_ledger_matches_the_account() -> None:
    """Cash follows from the ledger: start + Σ realized - Σ fees - Σ funding - open margin."""
    account = PaperAccount(START_USD, costs=COSTS)
    fills, funding = [], []
    for execution in (
        account.execute(open_intent("long"), reference_price=2000.0, at=T0),
        account.execute(
            open_intent("short", coin="BTC", quantity=0.01), reference_price=100_000.0, at=T0
        ),
    ):
        assert isinstance(execution, Execution)
        fills.append(execution.fill)
    payment = account.settle_funding("BTC", rate=0.0001, mark_price=100_500.0, at=T0 + MINUTE)
    assert payment is not None
    funding.append(payment)
    closed = account.execute(close_intent("long"), reference_price=2100.0, at=T0 + 2 * MINUTE)
    assert isinstance(closed, Execution)
    fills.append(closed.fill)

    state = AccountState.from_ledger(
        START_USD,
        fills=fills,
        funding_payments=funding,
        open_positions=account.positions.values(),
    )

    expected = account.state()
    assert state.positions == expected.positions
    assert state.cash_usd == pytest.approx(expected.cash_usd, rel=1e-12)
    assert state.fees_paid_usd == pytest.approx(expected.fees_paid_usd, rel=1e-12)
    assert state.realized_pnl_usd == pytest.approx(expected.realized_pnl_usd, rel=1e-12)
    assert state.funding_paid_usd == pytest.approx(expected.funding_paid_usd, rel=1e-12)


def test_restore_refuses_books_that_do_not_balance() -> None:
    state = opened("long").state()
    broken = AccountState(
        starting_cash_usd=state.starting_cash_usd,
        cash_usd=state.cash_usd + 1.0,
        realized_pnl_usd=state.realized_pnl_usd,
        fees_paid_usd=state.fees_paid_usd,
        funding_paid_usd=state.funding_paid_usd,
        positions=state.positions,
    )

    with pytest.raises(InvariantError, match="do not balance"):
        PaperAccount.restore(broken, costs=COSTS)


@pytest.mark.parametrize(
    ("intent", "match"),
    [
        (open_intent("long"), "already open"),
        (close_intent("short", coin="BTC"), "no open position on BTC"),
        (open_intent("long", coin="BTC", quantity=1.0, leverage=1), "exceed the free cash"),
    ],
)
def test_execute_returns_a_rejection_when_the_fill_is_impossible(
    intent: object, match: str
) -> None:
    """The third opens 1 BTC at 1x at a reference of 20,000: fill 20,020, margin 20,020 > the
    9,798.799 cash left after the ETH entry."""
    account = opened("long")
    price = 20_000.0 if match == "exceed the free cash" else 2000.0

    result = account.execute(intent, reference_price=price, at=T0)  # type: ignore[arg-type]

    assert isinstance(result, Rejection)
    assert match in result.reason


def test_view_without_a_price_for_an_open_position_is_unavailable() -> None:
    account = opened("long")

    with pytest.raises(DataUnavailableError, match="no price for ETH"):
        account.view({"BTC": 100_000.0}, T0)


def test_view_values_the_account_at_the_given_prices() -> None:
    """Long 1 ETH from 2002 priced at 2100: unrealized 98; equity 9,798.799 + 200.2 + 98."""
    account = opened("long")

    view = account.view({"ETH": 2100.0}, T0)

    assert view.unrealized_pnl_usd == pytest.approx(98.0)
    assert view.margin_usd == pytest.approx(200.2)
    assert view.equity_usd == pytest.approx(10_096.999)


@pytest.mark.parametrize(
    ("side", "leverage", "mmr", "expected"),
    [("long", 20, 0.005, 95.5), ("short", 20, 0.005, 104.5), ("long", 1, 0.0, 0.0)],
)
def test_liquidation_price_formula(
    side: PositionSide, leverage: int, mmr: float, expected: float
) -> None:
    """100 x (1 - 1/20 + 0.005) = 95.5; 100 x (1 + 1/20 - 0.005) = 104.5; 1x long with no
    maintenance margin is only liquidated at 0."""
    assert liquidation_price(
        side=side, entry_price=100.0, leverage=leverage, maintenance_margin_rate=mmr
    ) == pytest.approx(expected)


def test_find_first_exit_without_levels_or_touches_returns_none() -> None:
    flat = np.full(5, 100.0)
    no_levels = {"stop_loss": None, "take_profit": None, "liquidation": None}
    out_of_reach = {"stop_loss": 110.0, "take_profit": 90.0, "liquidation": 120.0}

    assert find_first_exit(flat, flat, flat, side="long", **no_levels) is None
    assert find_first_exit(flat, flat + 1, flat - 1, side="short", **out_of_reach) is None
    assert find_first_exit([], [], [], side="long", **out_of_reach) is None


def test_find_first_exit_finds_the_first_touch_in_a_long_block() -> None:
    """A million flat candles with one dip at index 654,321: the scan returns exactly that one."""
    n = 1_000_000
    o = np.full(n, 100.0)
    h = o + 0.5
    lo = o - 0.5
    lo[654_321] = 94.0
    lo[900_000] = 80.0

    hit = find_first_exit(
        o, h, lo, side="long", stop_loss=95.0, take_profit=110.0, liquidation=90.0
    )

    assert hit is not None
    assert (hit.index, hit.reason, hit.trigger_price, hit.gapped) == (
        654_321,
        "stop_loss",
        95.0,
        False,
    )
