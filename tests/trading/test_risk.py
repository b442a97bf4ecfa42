"""Risk checks: every decision becomes an intent, a rejection with a reason, or a hold.

The account is a real `PaperAccount` with 10,000 USD. Costs: fee 5 bps, slippage 10 bps, so an
entry of q coins at price p and leverage L takes margin q x p x 1.001 / L and a fee of
q x p x 1.001 x 0.0005 (a long; a short fills at p x 0.999).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from app.decisions import TradeDecision
from app.domain import AccountView, MarketRules, PaperCosts
from app.trading.paper import Execution, PaperAccount
from app.trading.risk import RiskLimits, check, round_quantity_down
from tests.trading.helpers import COSTS, T0, open_intent

PRICES = {"BTC": 60_000.0, "ETH": 2_000.0, "SOL": 150.0}
RULES = {
    "BTC": MarketRules("BTC/USDC:USDC", amount_step=0.0001, min_notional_usd=10.0),
    "ETH": MarketRules("ETH/USDC:USDC", amount_step=0.001, min_notional_usd=10.0),
    "SOL": MarketRules("SOL/USDC:USDC", amount_step=0.01, min_notional_usd=10.0),
}
LIMITS = RiskLimits(
    max_leverage=20,
    max_position_margin_pct=50.0,
    costs=COSTS,
)


def decision(coin: str, signal: str, **fields: Any) -> TradeDecision:
    """Return a decision; entries default to 0.1 coin at 10x, stop 5% away, target 5% away."""
    if signal in ("buy_to_enter", "sell_to_enter"):
        price = PRICES.get(coin, 1.0)
        sign = 1 if signal == "buy_to_enter" else -1
        defaults: dict[str, Any] = {
            "quantity": 0.1,
            "leverage": 10,
            "stop_loss": price * (1 - sign * 0.05),
            "profit_target": price * (1 + sign * 0.05),
        }
        fields = defaults | fields
    return TradeDecision(coin=coin, signal=signal, **fields)


def flat_account() -> AccountView:
    return PaperAccount(10_000.0, costs=COSTS).view(PRICES, T0)


def account_long_eth() -> AccountView:
    account = PaperAccount(10_000.0, costs=COSTS)
    result = account.execute(
        open_intent("long", stop_loss=1900.0, profit_target=2200.0), reference_price=2000.0, at=T0
    )
    assert isinstance(result, Execution)
    return account.view(PRICES, T0)


def run(
    decisions: list[TradeDecision],
    account: AccountView | None = None,
    limits: RiskLimits = LIMITS,
    **kwargs: Any,
) -> Any:
    return check(
        decisions,
        account=account if account is not None else flat_account(),
        prices=PRICES,
        rules=RULES,
        limits=limits,
        now=T0,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("made", "reason"),
    [
        pytest.param(decision("ETH", "buy_to_enter"), "already open", id="entry-on-open-coin"),
        pytest.param(decision("ETH", "sell_to_enter"), "no hedging", id="hedge-on-open-coin"),
        pytest.param(decision("BTC", "buy_to_enter", leverage=None), "needs a leverage",
                     id="missing-leverage"),
        pytest.param(decision("BTC", "buy_to_enter", leverage=25), "outside [1, 20]",
                     id="leverage-above-limit"),
        pytest.param(decision("BTC", "buy_to_enter", quantity=None), "quantity above 0",
                     id="missing-quantity"),
        pytest.param(decision("BTC", "buy_to_enter", quantity=0.0), "quantity above 0",
                     id="zero-quantity"),
        pytest.param(decision("BTC", "buy_to_enter", stop_loss=None), "both a stop_loss",
                     id="missing-stop"),
        pytest.param(decision("BTC", "buy_to_enter", profit_target=None), "both a stop_loss",
                     id="missing-target"),
        pytest.param(decision("BTC", "buy_to_enter", stop_loss=61_000.0),
                     "stop_loss < price < profit_target", id="long-stop-above-price"),
        pytest.param(decision("BTC", "buy_to_enter", profit_target=59_000.0),
                     "stop_loss < price < profit_target", id="long-target-below-price"),
        pytest.param(decision("BTC", "sell_to_enter", stop_loss=59_000.0),
                     "profit_target < price < stop_loss", id="short-stop-below-price"),
        pytest.param(decision("DOGE", "buy_to_enter"), "no valid price", id="unknown-coin"),
        pytest.param(decision("BTC", "close_position"), "no open position on BTC",
                     id="close-without-position"),
        pytest.param(decision("SOL", "buy_to_enter", quantity=0.004), "rounds down to 0",
                     id="rounds-to-zero"),
        pytest.param(decision("BTC", "buy_to_enter", quantity=0.0001),
                     "notional 6.00 USD (0.0001 BTC) is below the market minimum 10",
                     id="below-min-notional"),
        pytest.param(decision("ETH", "buy_to_enter", quantity=10.0, leverage=1), "already open",
                     id="open-coin-checked-before-sizing"),
        pytest.param(decision("SOL", "buy_to_enter", quantity=100.0, leverage=1),
                     "exceed the free cash", id="margin-above-cash"),
        pytest.param(decision("SOL", "buy_to_enter", quantity=40.0, leverage=1),
                     "exceeds 50% of the account value", id="margin-above-cap"),
    ],
)  # fmt: skip
def test_check_rejects_with_a_reason(made: TradeDecision, reason: str) -> None:
    """Account: 1 ETH long at 2002 (margin 200.2, fee 1.001): cash 9,798.799, equity at 2000
    is 9,996.999. 100 SOL at 1x: margin 150.15 x 100 = 15,015 > cash. 40 SOL at 1x: margin
    6,006 + fee 3.003 fits the cash but exceeds 50% of 9,996.999 = 4,998.4995.
    0.0001 BTC x 60,000 = 6 USD < the 10 USD minimum.
    """
    outcome = run([made], account=account_long_eth()).outcomes[0]

    assert outcome.status == "rejected"
    assert outcome.intent is None
    assert outcome.rejection is not None
    assert outcome.rejection.signal == made.signal
    assert reason in outcome.rejection.reason


def test_check_refuses_leverage_that_puts_liquidation_at_the_entry() -> None:
    """With a 6% maintenance margin, 20x (1/20 = 5%) would be liquidated on entry."""
    limits = RiskLimits(max_leverage=20, costs=PaperCosts(maintenance_margin_rate=0.06))

    outcome = run([decision("BTC", "buy_to_enter", leverage=20)], limits=limits).outcomes[0]

    assert outcome.rejection is not None
    assert "liquidation price at or beyond the entry" in outcome.rejection.reason


def test_check_rounds_quantity_down_and_says_so() -> None:
    """1.23456 ETH at step 0.001 -> 1.234; the requested quantity and a note stay on the intent."""
    outcome = run([decision("ETH", "buy_to_enter", quantity=1.23456)]).outcomes[0]

    intent = outcome.intent
    assert outcome.status == "accepted" and intent is not None
    assert intent.quantity == 1.234
    assert intent.requested_quantity == 1.23456
    assert "rounded down from 1.23456 to 1.234" in intent.note
    assert outcome.reason == intent.note


def test_check_builds_entry_intent_with_the_exit_plan() -> None:
    made = decision(
        "SOL",
        "sell_to_enter",
        quantity=2.0,
        leverage=5,
        stop_loss=160.0,
        profit_target=140.0,
        invalidation_condition="4h close above 158",
        confidence=0.7,
        risk_usd=20.0,
        justification="lower highs",
    )

    intent = run([made]).intents[0]

    assert (intent.coin, intent.action, intent.side, intent.quantity, intent.leverage) == (
        "SOL",
        "open",
        "short",
        2.0,
        5,
    )
    assert intent.exit_plan.stop_loss == 160.0
    assert intent.exit_plan.profit_target == 140.0
    assert intent.exit_plan.invalidation_condition == "4h close above 158"
    assert (intent.confidence, intent.risk_usd, intent.justification) == (0.7, 20.0, "lower highs")
    assert intent.note == ""


def test_check_close_takes_the_whole_open_position() -> None:
    outcome = run([decision("ETH", "close_position")], account=account_long_eth()).outcomes[0]

    assert outcome.intent is not None
    assert (outcome.intent.action, outcome.intent.side, outcome.intent.quantity) == (
        "close",
        "long",
        1.0,
    )


def test_check_hold_is_a_no_op_in_input_order() -> None:
    decisions = [
        decision("BTC", "hold"),
        decision("ETH", "close_position"),
        decision("SOL", "buy_to_enter", leverage=50),
        decision("BTC", "buy_to_enter"),
    ]

    outcome = run(decisions, account=account_long_eth())

    assert [o.status for o in outcome.outcomes] == ["hold", "accepted", "rejected", "rejected"]
    assert [o.decision for o in outcome.outcomes] == decisions
    assert "one action per coin" in (outcome.outcomes[3].reason or "")
    assert len(outcome.intents) == 1 and len(outcome.rejections) == 2


def test_check_counts_cash_used_by_earlier_entries_in_the_cycle() -> None:
    """Each entry: 2 ETH-worth at 1x. BTC 0.0667 x 60,060 = 4,006.002 margin + 2.003 fee;
    ETH 2 x 2,002 = 4,004 + 2.002; cash left 10,000 - 4,008.005 - 4,006.002 = 1,985.993, so
    26 SOL (26 x 150.15 = 3,903.9) no longer fits although it would alone."""
    decisions = [
        decision("BTC", "buy_to_enter", quantity=0.0667, leverage=1),
        decision("ETH", "buy_to_enter", quantity=2.0, leverage=1),
        decision("SOL", "buy_to_enter", quantity=26.0, leverage=1),
    ]

    outcome = run(decisions)

    assert [o.status for o in outcome.outcomes] == ["accepted", "accepted", "rejected"]
    assert "1985.99 USD" in (outcome.outcomes[2].reason or "")
    alone = run(decisions[2:])
    assert alone.outcomes[0].status == "accepted"


def test_check_caps_open_positions_including_this_cycles_entries() -> None:
    limits = RiskLimits(
        max_open_positions=2, costs=PaperCosts(fee_rate=0.0005, slippage_rate=0.001)
    )

    outcome = run(
        [decision("BTC", "buy_to_enter"), decision("SOL", "buy_to_enter", quantity=1.0)],
        account=account_long_eth(),
        limits=limits,
    )

    assert [o.status for o in outcome.outcomes] == ["accepted", "rejected"]
    assert "the limit is 2" in (outcome.outcomes[1].reason or "")


def test_check_caps_entries_in_the_last_hour() -> None:
    """Earlier entries at -10 min (counts) and -61 min (outside the hour): one slot of two left."""
    limits = RiskLimits(max_entries_per_hour=2)

    outcome = run(
        [decision("BTC", "buy_to_enter"), decision("SOL", "buy_to_enter", quantity=1.0)],
        limits=limits,
        recent_entries_at=[T0 - timedelta(minutes=10), T0 - timedelta(minutes=61)],
    )

    assert [o.status for o in outcome.outcomes] == ["accepted", "rejected"]
    assert "2 entries in the last hour" in (outcome.outcomes[1].reason or "")


def test_check_notes_a_stop_beyond_the_liquidation_price() -> None:
    """20x long at 2000: liquidation ~2000 x (1 - 0.05 + 0.005) = 1910; a 1900 stop is past it."""
    made = decision("ETH", "buy_to_enter", leverage=20, stop_loss=1900.0, profit_target=2100.0)

    intent = run([made]).intents[0]

    assert "beyond the liquidation price" in intent.note


@pytest.mark.parametrize(
    ("quantity", "rules", "expected"),
    [
        (0.3, MarketRules("X", amount_step=0.1), 0.3),
        (0.29999, MarketRules("X", amount_step=0.1), 0.2),
        (1234.5, MarketRules("X", amount_step=5.0), 1230.0),
        (1.23456, MarketRules("X", amount_step=1.0, contract_size=0.01), 1.23),
        (1.23456, MarketRules("X"), 1.23456),
        (1.23456, None, 1.23456),
    ],
)
def test_round_quantity_down_to_the_amount_step(
    quantity: float, rules: MarketRules | None, expected: float
) -> None:
    """0.3 / 0.1 is 2.9999999999999996 in floats and must still give 3 steps; with a contract
    size of 0.01 coin, 1.23456 coin = 123.456 contracts -> 123 contracts = 1.23 coin."""
    assert round_quantity_down(quantity, rules) == pytest.approx(expected, abs=1e-12)
