"""Pure checks that turn decisions into order intents or rejections with a reason.

`check` reads the model's per-coin decisions for one cycle and says, for each of them, what
becomes of it: an `OrderIntent` for the paper exchange, a `Rejection` with the reason, or nothing
(a `hold`). The rules (docs/simulation.md has the full list):

- one action per coin per cycle; a coin without a price is refused;
- `close_position` needs an open position on that coin (otherwise it is a rejection, so the
  record shows the model believed in a position that was not there);
- an entry (`buy_to_enter` = long, `sell_to_enter` = short) needs the coin to be flat, a
  quantity, a leverage in [1, max_leverage] (a missing leverage is a rejection: guessing one would
  change the risk the model asked for), a stop loss on the losing side and a profit target on the
  winning side of the current price;
- the quantity is rounded DOWN to the market's amount step; the rounded notional must reach the
  market minimum; the change is recorded in the intent's `note` and `requested_quantity`;
- margin plus the entry fee must fit the free cash, and the margin must stay within
  `max_position_margin_pct` of the account value;
- optional caps on open positions and on entries in the last hour.

Entries in one cycle are checked cumulatively: the cash and the slots the first one takes are not
available to the second. Cash and slots freed by a `close_position` in the same cycle count only
from the next cycle, so the limits hold whatever order the engine fills the intents in.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Final, Literal

from app.decisions import TradeDecision
from app.domain import (
    AccountView,
    ExitPlan,
    MarketRules,
    OrderIntent,
    PaperCosts,
    PositionSide,
    Rejection,
    liquidation_price,
)

OutcomeStatus = Literal["accepted", "rejected", "hold"]

# `max_entries_per_hour` counts the entries filled in (now - ENTRY_WINDOW, now].
ENTRY_WINDOW: Final = timedelta(hours=1)
# Quantities like 0.3 / 0.1 come out as 2.9999999999999996; this slack keeps them at 3 steps.
_STEP_SLACK: Final = 1e-9


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The limits every entry is checked against (mapped from the `risk` settings).

    `max_position_margin_pct` is in percent of the account value (50.0 = half). `costs` are the
    paper exchange's own (the same object the accounts use), so the cash check predicts the fill
    exactly; its maintenance margin rate refuses leverage so high that the liquidation price would
    sit at or beyond the entry.
    """

    max_leverage: int = 20
    max_position_margin_pct: float = 50.0
    max_open_positions: int | None = None
    max_entries_per_hour: int | None = None
    costs: PaperCosts = field(default_factory=PaperCosts)

    def __post_init__(self) -> None:
        if self.max_leverage < 1:
            raise ValueError("max_leverage must be at least 1")
        if not 0 < self.max_position_margin_pct <= 100:
            raise ValueError("max_position_margin_pct is a percent in (0, 100]")


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    """What became of one decision: an intent, a rejection, or nothing (`hold`)."""

    decision: TradeDecision
    status: OutcomeStatus
    intent: OrderIntent | None = None
    rejection: Rejection | None = None

    @property
    def reason(self) -> str | None:
        """Return the rejection reason, or the intent's note when it has one."""
        if self.rejection is not None:
            return self.rejection.reason
        if self.intent is not None and self.intent.note:
            return self.intent.note
        return None


@dataclass(frozen=True, slots=True)
class RiskOutcome:
    """The per-decision outcomes of one cycle, in the order the decisions came."""

    outcomes: tuple[DecisionOutcome, ...] = field(default_factory=tuple)

    @property
    def intents(self) -> list[OrderIntent]:
        """Return the accepted order intents, in decision order."""
        return [o.intent for o in self.outcomes if o.intent is not None]

    @property
    def rejections(self) -> list[Rejection]:
        """Return the rejections, in decision order."""
        return [o.rejection for o in self.outcomes if o.rejection is not None]


@dataclass(slots=True)
class _Budget:
    """What earlier entries of this cycle have already used."""

    cash_usd: float
    equity_usd: float
    open_positions: int
    entries_last_hour: int
    coins_seen: set[str] = field(default_factory=set)


def in_entry_window(entry_at: datetime, now: datetime) -> bool:
    """Return True when an entry filled at `entry_at` counts against the hourly cap at `now`."""
    return now - ENTRY_WINDOW < entry_at <= now


def forget_old_entries(entries_at: deque[datetime], now: datetime) -> None:
    """Drop, from the left of a time-ordered deque, the entries that no longer count at `now`."""
    while entries_at and entries_at[0] <= now - ENTRY_WINDOW:
        entries_at.popleft()


def entry_cost_usd(
    *, quantity: float, price: float, leverage: int, side: PositionSide, limits: RiskLimits
) -> tuple[float, float]:
    """Return the (margin, entry fee) an entry would take at `price`, slippage included."""
    direction = 1.0 if side == "long" else -1.0
    fill_price = price * (1.0 + direction * limits.costs.slippage_rate)
    notional_usd = quantity * fill_price
    return notional_usd / leverage, notional_usd * limits.costs.fee_rate


def round_quantity_down(quantity: float, rules: MarketRules | None) -> float:
    """Return `quantity` (coin units) rounded down to the market's amount step."""
    if rules is None or rules.amount_step is None or rules.amount_step <= 0:
        return quantity
    step = rules.amount_step
    contract_size = rules.contract_size if rules.contract_size > 0 else 1.0
    # The step counts contracts; a quantity in coins is quantity / contract_size contracts.
    steps = math.floor(quantity / contract_size / step + _STEP_SLACK)
    exponent = Decimal(repr(step)).as_tuple().exponent
    decimals = max(0, -exponent) if isinstance(exponent, int) else 12
    rounded = round(steps * step, decimals) * contract_size
    # The slack may land a hair above a quantity that was on the grid up to float noise.
    return min(rounded, quantity)


def check(
    decisions: Sequence[TradeDecision],
    *,
    account: AccountView,
    prices: Mapping[str, float],
    rules: Mapping[str, MarketRules],
    limits: RiskLimits,
    now: datetime,
    recent_entries_at: Sequence[datetime] = (),
) -> RiskOutcome:
    """Check one cycle's decisions against the account and the limits.

    Parameters
    ----------
    account:
        The account priced at the decision time; its `cash_usd` is the free cash.
    prices:
        The reference price of each coin (the price the decisions were made on).
    rules:
        Each coin's precision and minimums; a coin without rules is neither rounded nor bounded.
    recent_entries_at:
        When earlier entries were filled; those within the hour before `now` count against
        `max_entries_per_hour`.

    Returns one outcome per decision, in input order.
    """
    budget = _Budget(
        cash_usd=account.cash_usd,
        equity_usd=account.equity_usd,
        open_positions=len(account.positions),
        entries_last_hour=sum(1 for at in recent_entries_at if in_entry_window(at, now)),
    )
    outcomes = [
        _check_one(d, account=account, prices=prices, rules=rules, limits=limits, budget=budget)
        for d in decisions
    ]
    return RiskOutcome(outcomes=tuple(outcomes))


def _check_one(
    decision: TradeDecision,
    *,
    account: AccountView,
    prices: Mapping[str, float],
    rules: Mapping[str, MarketRules],
    limits: RiskLimits,
    budget: _Budget,
) -> DecisionOutcome:
    coin = decision.coin
    if coin in budget.coins_seen:
        return _reject(decision, f"a second decision for {coin} in one cycle: one action per coin")
    budget.coins_seen.add(coin)
    if decision.signal == "hold":
        return DecisionOutcome(decision=decision, status="hold")
    price = prices.get(coin)
    if price is None or not math.isfinite(price) or price <= 0:
        return _reject(decision, f"no valid price for {coin}: it is not traded in this arena")
    if decision.signal == "close_position":
        position = account.positions.get(coin)
        if position is None:
            return _reject(decision, f"no open position on {coin} to close")
        intent = OrderIntent(
            coin=coin,
            action="close",
            side=position.side,
            quantity=position.quantity,
            leverage=position.leverage,
            exit_plan=position.exit_plan,
            confidence=decision.confidence,
            risk_usd=decision.risk_usd,
            justification=decision.justification,
            requested_quantity=decision.quantity,
        )
        return DecisionOutcome(decision=decision, status="accepted", intent=intent)
    side: PositionSide = "long" if decision.signal == "buy_to_enter" else "short"
    return _check_entry(
        decision,
        side=side,
        price=price,
        account=account,
        rules=rules.get(coin),
        limits=limits,
        budget=budget,
    )


def _check_entry(
    decision: TradeDecision,
    *,
    side: PositionSide,
    price: float,
    account: AccountView,
    rules: MarketRules | None,
    limits: RiskLimits,
    budget: _Budget,
) -> DecisionOutcome:
    coin = decision.coin
    reason = _entry_shape_problem(decision, side=side, price=price, account=account, limits=limits)
    if reason is not None:
        return _reject(decision, reason)
    # _entry_shape_problem has checked that these are present.
    assert decision.quantity is not None and decision.leverage is not None
    requested, leverage = decision.quantity, decision.leverage

    quantity = round_quantity_down(requested, rules)
    reason = _market_minimum_problem(coin, requested, quantity, price, rules)
    if reason is not None:
        return _reject(decision, reason)

    if limits.max_open_positions is not None and budget.open_positions >= limits.max_open_positions:
        return _reject(
            decision,
            f"{budget.open_positions} positions already open or opened this cycle; "
            f"the limit is {limits.max_open_positions}",
        )
    if (
        limits.max_entries_per_hour is not None
        and budget.entries_last_hour >= limits.max_entries_per_hour
    ):
        return _reject(
            decision,
            f"{budget.entries_last_hour} entries in the last hour; "
            f"the limit is {limits.max_entries_per_hour}",
        )

    margin_usd, fee_usd = entry_cost_usd(
        quantity=quantity, price=price, leverage=leverage, side=side, limits=limits
    )
    if margin_usd + fee_usd > budget.cash_usd:
        return _reject(
            decision,
            f"margin {margin_usd:.2f} + entry fee {fee_usd:.2f} USD exceed the free cash "
            f"{max(budget.cash_usd, 0.0):.2f} USD",
        )
    margin_cap_usd = limits.max_position_margin_pct / 100.0 * budget.equity_usd
    if margin_usd > margin_cap_usd:
        return _reject(
            decision,
            f"margin {margin_usd:.2f} USD exceeds {limits.max_position_margin_pct:g}% of the "
            f"account value ({margin_cap_usd:.2f} USD)",
        )

    budget.cash_usd -= margin_usd + fee_usd
    budget.equity_usd -= fee_usd
    budget.open_positions += 1
    budget.entries_last_hour += 1
    notes = []
    if quantity != requested:
        notes.append(_rounding_note(requested, quantity, rules))
    notes.extend(_liquidation_note(decision, side=side, price=price, limits=limits))
    intent = OrderIntent(
        coin=coin,
        action="open",
        side=side,
        quantity=quantity,
        leverage=leverage,
        exit_plan=ExitPlan(
            profit_target=decision.profit_target,
            stop_loss=decision.stop_loss,
            invalidation_condition=decision.invalidation_condition,
        ),
        confidence=decision.confidence,
        risk_usd=decision.risk_usd,
        justification=decision.justification,
        requested_quantity=requested,
        note="; ".join(notes),
    )
    return DecisionOutcome(decision=decision, status="accepted", intent=intent)


def _entry_shape_problem(
    decision: TradeDecision,
    *,
    side: PositionSide,
    price: float,
    account: AccountView,
    limits: RiskLimits,
) -> str | None:
    """Return why the entry is malformed on its own, before any sizing, or None."""
    coin = decision.coin
    held = account.positions.get(coin)
    if held is not None:
        return (
            f"a {held.side} position on {coin} is already open: "
            "only hold or close_position (no pyramiding, no hedging)"
        )
    if decision.quantity is None or not decision.quantity > 0:
        return "an entry needs a quantity above 0 (coin units)"
    leverage = decision.leverage
    if leverage is None:
        return "an entry needs a leverage (an integer from 1 to the limit)"
    if not 1 <= leverage <= limits.max_leverage:
        return f"leverage {leverage} is outside [1, {limits.max_leverage}]"
    if 1.0 / leverage <= limits.costs.maintenance_margin_rate:
        return (
            f"leverage {leverage} would put the liquidation price at or beyond the entry "
            f"(maintenance margin rate {limits.costs.maintenance_margin_rate:g})"
        )
    stop, target = decision.stop_loss, decision.profit_target
    if stop is None or target is None:
        return "an entry needs both a stop_loss and a profit_target"
    if side == "long" and not stop < price < target:
        return (
            f"a long needs stop_loss < price < profit_target; got stop {stop:g}, "
            f"price {price:g}, target {target:g}"
        )
    if side == "short" and not target < price < stop:
        return (
            f"a short needs profit_target < price < stop_loss; got target {target:g}, "
            f"price {price:g}, stop {stop:g}"
        )
    return None


def _market_minimum_problem(
    coin: str, requested: float, quantity: float, price: float, rules: MarketRules | None
) -> str | None:
    if quantity <= 0:
        step = rules.amount_step if rules is not None else None
        return f"quantity {requested:g} {coin} rounds down to 0 at the amount step {step!r}"
    if rules is None:
        return None
    if rules.min_amount is not None and quantity / rules.contract_size < rules.min_amount:
        return (
            f"quantity {quantity:g} {coin} is below the market minimum amount {rules.min_amount:g}"
        )
    notional_usd = quantity * price
    if rules.min_notional_usd is not None and notional_usd < rules.min_notional_usd:
        return (
            f"notional {notional_usd:.2f} USD ({quantity:g} {coin}) is below the market minimum "
            f"{rules.min_notional_usd:g} USD"
        )
    return None


def _rounding_note(requested: float, quantity: float, rules: MarketRules | None) -> str:
    step = rules.amount_step if rules is not None else None
    return f"quantity rounded down from {requested!r} to {quantity!r} (amount step {step!r})"


def _liquidation_note(
    decision: TradeDecision, *, side: PositionSide, price: float, limits: RiskLimits
) -> list[str]:
    """Say when the stop sits beyond the estimated liquidation price (liquidation comes first)."""
    stop, leverage = decision.stop_loss, decision.leverage
    if stop is None or leverage is None:
        return []
    liquidation = liquidation_price(
        side=side,
        entry_price=price,
        leverage=leverage,
        maintenance_margin_rate=limits.costs.maintenance_margin_rate,
    )
    beyond = stop <= liquidation if side == "long" else stop >= liquidation
    if not beyond:
        return []
    return [f"stop {stop:g} lies beyond the liquidation price ~{liquidation:g}"]


def _reject(decision: TradeDecision, reason: str) -> DecisionOutcome:
    rejection = Rejection(coin=decision.coin, signal=decision.signal, reason=reason)
    return DecisionOutcome(decision=decision, status="rejected", rejection=rejection)
