"""The simulated isolated-margin perpetuals account, one per agent (docs/simulation.md).

Books, in the quote currency (floats; the identities below hold to 1e-9 relative):

- opening locks `margin = quantity x fill price / leverage` and pays the taker fee from cash;
- closing releases the margin, realizes the price PnL and pays the taker fee;
- funding is settled in cash: `amount = side x rate x mark x quantity` (> 0 is paid);
- account value = cash + Σ(margin + unrealized PnL), and at every moment
  cash = starting cash + realized PnL - fees - funding - Σ open margin.

`realized_pnl_usd` is the price PnL of closed positions, before fees and funding (those have their
own totals). Market fills move the reference price against the trader by the slippage. Exits
between decisions (stop loss, take profit, liquidation) come from candles through a vectorised
scan (`find_first_exit`); docs/simulation.md gives every rule with worked numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.domain import (
    AccountState,
    AccountView,
    Bars,
    ClosedTrade,
    Fill,
    FillReason,
    FundingPayment,
    OrderIntent,
    PaperCosts,
    Position,
    PositionSide,
    Rejection,
    Settlements,
    Signal,
    datetime_to_ns,
    ensure_utc,
    liquidation_price,
    ns_to_datetime,
)
from app.errors import DataUnavailableError, InvariantError

# Float money: every identity is checked to this relative tolerance (see docs/simulation.md).
BOOKS_TOLERANCE: Final = 1e-9


@dataclass(frozen=True, slots=True)
class Execution:
    """A fill and what it did: the position opened (or closed) and, for a close, the trade."""

    fill: Fill
    position: Position
    closed_trade: ClosedTrade | None = None


@dataclass(frozen=True, slots=True)
class ExitHit:
    """The first candle that reaches an exit level, and the price the exit triggers at.

    `trigger_price` is the level itself, or the candle's open when the candle opened through the
    level (`gapped`). It is before slippage.
    """

    index: int
    reason: FillReason
    trigger_price: float
    gapped: bool


@dataclass(frozen=True, slots=True)
class MonitorResult:
    """What a pass over candles did to one position: funding settled, then maybe an exit."""

    funding: tuple[FundingPayment, ...] = ()
    exit: Execution | None = None


def find_first_exit(
    open_: npt.ArrayLike,
    high: npt.ArrayLike,
    low: npt.ArrayLike,
    *,
    side: PositionSide,
    stop_loss: float | None,
    take_profit: float | None,
    liquidation: float | None,
) -> ExitHit | None:
    """Return the first candle that touches the stop, the target or the liquidation price.

    Vectorised: one comparison pass over the arrays, no Python loop per candle. Within the first
    touching candle: a level the candle opened through fills at the open (the adverse levels are
    looked at first); otherwise the adverse side wins (liquidation or stop, whichever the price
    meets first) over the take profit, because the path inside a candle is unknown.
    """
    o = np.asarray(open_, dtype=np.float64)
    h = np.asarray(high, dtype=np.float64)
    lo = np.asarray(low, dtype=np.float64)
    stop, target, liq = _level(stop_loss), _level(take_profit), _level(liquidation)
    if side == "long":
        # The adverse levels lie below: the higher of stop and liquidation is met first.
        adverse = max(_or(stop, -math.inf), _or(liq, -math.inf))
        touched = lo <= adverse
        if target is not None:
            touched |= h >= target
    else:
        adverse = min(_or(stop, math.inf), _or(liq, math.inf))
        touched = h >= adverse
        if target is not None:
            touched |= lo <= target
    if touched.size == 0:
        return None
    i = int(np.argmax(touched))
    if not touched[i]:
        return None
    if side == "long":
        return _classify_long(i, float(o[i]), float(lo[i]), stop, target, liq, sign=1.0)
    # Within one candle a short is a long on the negated price: the high becomes the low.
    return _classify_long(
        i, -float(o[i]), -float(h[i]), _negate(stop), _negate(target), _negate(liq), sign=-1.0
    )


def _or(level: float | None, default: float) -> float:
    return default if level is None else level


def _negate(level: float | None) -> float | None:
    return None if level is None else -level


def _level(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _classify_long(
    i: int,
    first_open: float,
    first_low: float,
    stop: float | None,
    target: float | None,
    liquidation: float | None,
    *,
    sign: float,
) -> ExitHit:
    """Say which level the touching candle `i` met first, for a long (prices times `sign`)."""
    if liquidation is not None and first_open <= liquidation:
        return ExitHit(i, "liquidation", sign * liquidation, gapped=True)
    if stop is not None and first_open <= stop:
        return ExitHit(i, "stop_loss", sign * first_open, gapped=True)
    if target is not None and first_open >= target:
        return ExitHit(i, "take_profit", sign * first_open, gapped=True)
    adverse = max(_or(stop, -math.inf), _or(liquidation, -math.inf))
    if first_low <= adverse:
        if liquidation is not None and (stop is None or liquidation >= stop):
            return ExitHit(i, "liquidation", sign * liquidation, gapped=False)
        assert stop is not None
        return ExitHit(i, "stop_loss", sign * stop, gapped=False)
    assert target is not None
    return ExitHit(i, "take_profit", sign * target, gapped=False)


class PaperAccount:
    """One agent's simulated isolated-margin perpetuals account.

    Business refusals (a position already open, nothing to close, cash short at the fill price)
    come back as `Rejection`; malformed input raises `ValueError`; books that do not balance raise
    `InvariantError`.
    """

    def __init__(self, starting_cash_usd: float, *, costs: PaperCosts | None = None) -> None:
        if not math.isfinite(starting_cash_usd) or starting_cash_usd < 0:
            raise ValueError("starting cash must be a finite amount >= 0")
        self.costs = costs if costs is not None else PaperCosts()
        self._starting_cash_usd = starting_cash_usd
        self._cash_usd = starting_cash_usd
        self._realized_pnl_usd = 0.0
        self._fees_paid_usd = 0.0
        self._funding_paid_usd = 0.0
        self._positions: dict[str, Position] = {}

    @classmethod
    def restore(cls, state: AccountState, *, costs: PaperCosts | None = None) -> PaperAccount:
        """Rebuild an account from saved state; raise `InvariantError` if it does not balance."""
        account = cls(state.starting_cash_usd, costs=costs)
        account._cash_usd = state.cash_usd
        account._realized_pnl_usd = state.realized_pnl_usd
        account._fees_paid_usd = state.fees_paid_usd
        account._funding_paid_usd = state.funding_paid_usd
        for coin, position in state.positions.items():
            _check_position(coin, position)
            account._positions[coin] = position
        account._check_books()
        return account

    def state(self) -> AccountState:
        """Return the state to persist; `PaperAccount.restore(state)` gives this account back."""
        return AccountState(
            starting_cash_usd=self._starting_cash_usd,
            cash_usd=self._cash_usd,
            realized_pnl_usd=self._realized_pnl_usd,
            fees_paid_usd=self._fees_paid_usd,
            funding_paid_usd=self._funding_paid_usd,
            positions=dict(self._positions),
        )

    @property
    def cash_usd(self) -> float:
        """Return the free cash (not locked as margin)."""
        return self._cash_usd

    @property
    def positions(self) -> Mapping[str, Position]:
        """Return the open positions by coin (read-only)."""
        return MappingProxyType(self._positions)

    def view(self, prices: Mapping[str, float], at: datetime) -> AccountView:
        """Return the account priced at `prices`; every open position's coin needs a price."""
        unrealized = 0.0
        for coin, position in self._positions.items():
            price = prices.get(coin)
            if price is None or not math.isfinite(price):
                raise DataUnavailableError(
                    f"no price for {coin}, which has an open position: cannot value the account"
                )
            unrealized += position.unrealized_pnl_usd(price)
        return AccountView(
            at=ensure_utc(at),
            starting_cash_usd=self._starting_cash_usd,
            cash_usd=self._cash_usd,
            margin_usd=sum(p.margin_usd for p in self._positions.values()),
            unrealized_pnl_usd=unrealized,
            realized_pnl_usd=self._realized_pnl_usd,
            fees_paid_usd=self._fees_paid_usd,
            funding_paid_usd=self._funding_paid_usd,
            positions=dict(self._positions),
        )

    def execute(
        self, intent: OrderIntent, *, reference_price: float, at: datetime
    ) -> Execution | Rejection:
        """Fill a checked intent at `reference_price` moved against the trader by the slippage."""
        _check_price(reference_price)
        if intent.action == "close":
            if intent.coin not in self._positions:
                return Rejection(
                    intent.coin, "close_position", f"no open position on {intent.coin} to close"
                )
            return self.close_position(
                intent.coin, reference_price=reference_price, at=at, reason="close_position"
            )
        return self._open(intent, reference_price=reference_price, at=at)

    def close_position(
        self, coin: str, *, reference_price: float, at: datetime, reason: FillReason
    ) -> Execution:
        """Close the whole position on `coin` at market; past the liquidation price it liquidates.

        Raises `KeyError` when no position is open on `coin`.
        """
        _check_price(reference_price)
        position = self._positions[coin]
        if reason == "liquidation":
            return self._close(position, trigger_price=reference_price, at=at, reason=reason)
        fill_price = reference_price * (1.0 - position.direction * self.costs.slippage_rate)
        if position.direction * (fill_price - position.liquidation_price) <= 0:
            # Isolated margin: a position can never lose more than its margin.
            return self._close(position, trigger_price=reference_price, at=at, reason="liquidation")
        return self._close(
            position, trigger_price=reference_price, at=at, reason=reason, fill_price=fill_price
        )

    def settle_funding(
        self, coin: str, *, rate: float, mark_price: float, at: datetime
    ) -> FundingPayment | None:
        """Settle one funding payment on `coin`'s position (positive rate: longs pay shorts).

        Returns None when no position is open on `coin`.
        """
        position = self._positions.get(coin)
        if position is None:
            return None
        if not math.isfinite(rate):
            raise ValueError(f"funding rate {rate!r} for {coin} is not a number")
        _check_price(mark_price)
        amount_usd = position.direction * rate * mark_price * position.quantity
        self._positions[coin] = replace(position, funding_usd=position.funding_usd + amount_usd)
        self._cash_usd -= amount_usd
        self._funding_paid_usd += amount_usd
        self._check_books()
        return FundingPayment(
            coin=coin,
            rate=rate,
            mark_price=mark_price,
            quantity=position.quantity,
            amount_usd=amount_usd,
            settled_at=ensure_utc(at),
        )

    def apply_candles(
        self, coin: str, candles: pd.DataFrame, *, funding: pd.DataFrame | None = None
    ) -> MonitorResult:
        """Apply funding, then the first stop/target/liquidation the candles reach, to `coin`.

        `candles` has columns `open, high, low, close`, indexed by UTC open time (sorted);
        `funding` (optional) has a `rate` column and optionally `mark_price`, indexed by
        settlement time. See `apply_bars` for the rules.
        """
        if coin not in self._positions:
            return MonitorResult()
        settlements = None if funding is None or funding.empty else Settlements.from_frame(funding)
        return self.apply_bars(coin, Bars.from_frame(candles), settlements)

    def apply_bars(
        self, coin: str, bars: Bars, settlements: Settlements | None = None
    ) -> MonitorResult:
        """Apply funding, then the first stop/target/liquidation the bars reach, to `coin`.

        Only candles opening at or after the position's `opened_at` count: a backtest entry fills
        at the open of the candle starting at the cycle time, so that candle's high and low come
        after the fill; a live entry at 12:03:07 starts with the 12:04 one-minute candle.
        An exit is stamped with the open time of the candle that triggered it.

        A settlement at `s` is paid when the position was opened before `s` and had not exited in
        a candle opening before `s`; without a mark price, the open of the candle at `s` (else the
        last close before `s`) stands in. Pass the settlements that fall within the bars' span.
        """
        position = self._positions.get(coin)
        if position is None:
            return MonitorResult()
        opened_ns = datetime_to_ns(position.opened_at)
        start = int(bars.open_ns.searchsorted(opened_ns, side="left"))
        hit = find_first_exit(
            bars.open[start:],
            bars.high[start:],
            bars.low[start:],
            side=position.side,
            stop_loss=position.exit_plan.stop_loss,
            take_profit=position.exit_plan.profit_target,
            liquidation=position.liquidation_price,
        )
        exit_ns = None if hit is None else int(bars.open_ns[start + hit.index])
        payments = (
            ()
            if settlements is None or len(settlements) == 0
            else self._settle_funding_rows(coin, bars, settlements, opened_ns, until_ns=exit_ns)
        )
        if hit is None or exit_ns is None:
            return MonitorResult(funding=payments)
        execution = self.close_position(
            coin,
            reference_price=hit.trigger_price,
            at=ns_to_datetime(exit_ns),
            reason=hit.reason,
        )
        return MonitorResult(funding=payments, exit=execution)

    def _settle_funding_rows(
        self,
        coin: str,
        bars: Bars,
        settlements: Settlements,
        opened_ns: int,
        *,
        until_ns: int | None,
    ) -> tuple[FundingPayment, ...]:
        payments = []
        # One iteration per settlement (a few per window), not per candle.
        for settled_ns, rate, mark in zip(
            settlements.settled_ns.tolist(),
            settlements.rates.tolist(),
            settlements.marks.tolist(),
            strict=True,
        ):
            if settled_ns <= opened_ns or (until_ns is not None and settled_ns > until_ns):
                continue
            if not math.isfinite(rate):
                continue
            mark_price = float(mark) if math.isfinite(mark) else _price_at(bars, settled_ns)
            payment = self.settle_funding(
                coin, rate=float(rate), mark_price=mark_price, at=ns_to_datetime(settled_ns)
            )
            if payment is not None:
                payments.append(payment)
        return tuple(payments)

    def _open(
        self, intent: OrderIntent, *, reference_price: float, at: datetime
    ) -> Execution | Rejection:
        signal: Signal = "buy_to_enter" if intent.side == "long" else "sell_to_enter"
        if intent.coin in self._positions:
            held = self._positions[intent.coin]
            return Rejection(
                intent.coin, signal, f"a {held.side} position on {intent.coin} is already open"
            )
        if not intent.quantity > 0 or not math.isfinite(intent.quantity):
            raise ValueError(f"intent quantity {intent.quantity!r} must be a number above 0")
        if intent.leverage < 1:
            raise ValueError(f"intent leverage {intent.leverage!r} must be at least 1")
        direction = 1.0 if intent.side == "long" else -1.0
        fill_price = reference_price * (1.0 + direction * self.costs.slippage_rate)
        notional_usd = intent.quantity * fill_price
        margin_usd = notional_usd / intent.leverage
        fee_usd = notional_usd * self.costs.fee_rate
        if margin_usd + fee_usd > self._cash_usd + BOOKS_TOLERANCE:
            return Rejection(
                intent.coin,
                signal,
                f"margin {margin_usd:.2f} + entry fee {fee_usd:.2f} USD exceed the free cash "
                f"{max(self._cash_usd, 0.0):.2f} USD at the fill price {fill_price:g}",
            )
        at = ensure_utc(at)
        position = Position(
            coin=intent.coin,
            side=intent.side,
            quantity=intent.quantity,
            entry_price=fill_price,
            leverage=intent.leverage,
            margin_usd=margin_usd,
            liquidation_price=liquidation_price(
                side=intent.side,
                entry_price=fill_price,
                leverage=intent.leverage,
                maintenance_margin_rate=self.costs.maintenance_margin_rate,
            ),
            opened_at=at,
            exit_plan=intent.exit_plan,
            confidence=intent.confidence,
            risk_usd=intent.risk_usd,
            justification=intent.justification,
            entry_fee_usd=fee_usd,
        )
        self._positions[intent.coin] = position
        self._cash_usd -= margin_usd + fee_usd
        self._fees_paid_usd += fee_usd
        self._check_books()
        fill = Fill(
            coin=intent.coin,
            side="buy" if intent.side == "long" else "sell",
            quantity=intent.quantity,
            price=fill_price,
            reference_price=reference_price,
            fee_usd=fee_usd,
            reason="entry",
            filled_at=at,
        )
        return Execution(fill=fill, position=position)

    def _close(
        self,
        position: Position,
        *,
        trigger_price: float,
        at: datetime,
        reason: FillReason,
        fill_price: float | None = None,
    ) -> Execution:
        gross_at_fill = 0.0
        if reason == "liquidation":
            # The position fills at its liquidation price whatever the candle did (a gap past it
            # included) and the margin left (mmr x entry notional) goes as the liquidation fee:
            # the trader loses exactly the margin, never more.
            fill_price = position.liquidation_price
            gross_at_fill = position.unrealized_pnl_usd(fill_price)
            fee_usd = max(0.0, position.margin_usd + gross_at_fill)
        else:
            assert fill_price is not None
            gross_at_fill = position.unrealized_pnl_usd(fill_price)
            fee_usd = position.quantity * fill_price * self.costs.fee_rate
        at = ensure_utc(at)
        del self._positions[position.coin]
        self._cash_usd += position.margin_usd + gross_at_fill - fee_usd
        self._realized_pnl_usd += gross_at_fill
        self._fees_paid_usd += fee_usd
        self._check_books()
        fill = Fill(
            coin=position.coin,
            side="sell" if position.side == "long" else "buy",
            quantity=position.quantity,
            price=fill_price,
            reference_price=trigger_price,
            fee_usd=fee_usd,
            reason=reason,
            filled_at=at,
            realized_pnl_usd=gross_at_fill,
        )
        trade = ClosedTrade(
            coin=position.coin,
            side=position.side,
            quantity=position.quantity,
            leverage=position.leverage,
            entry_price=position.entry_price,
            exit_price=fill_price,
            opened_at=position.opened_at,
            closed_at=at,
            entry_fee_usd=position.entry_fee_usd,
            exit_fee_usd=fee_usd,
            funding_usd=position.funding_usd,
            gross_pnl_usd=gross_at_fill,
            net_pnl_usd=gross_at_fill - position.entry_fee_usd - fee_usd - position.funding_usd,
            exit_reason=reason,
        )
        return Execution(fill=fill, position=position, closed_trade=trade)

    def _check_books(self) -> None:
        margin = sum(p.margin_usd for p in self._positions.values())
        expected = (
            self._starting_cash_usd
            + self._realized_pnl_usd
            - self._fees_paid_usd
            - self._funding_paid_usd
            - margin
        )
        scale = max(
            1.0,
            self._starting_cash_usd,
            abs(self._realized_pnl_usd),
            self._fees_paid_usd,
            abs(self._funding_paid_usd),
            margin,
        )
        if not math.isfinite(self._cash_usd) or abs(self._cash_usd - expected) > (
            BOOKS_TOLERANCE * scale
        ):
            raise InvariantError(
                f"paper books do not balance: cash {self._cash_usd!r} USD, expected {expected!r} "
                "(starting cash + realized PnL - fees - funding - open margin)"
            )


def _check_price(price: float) -> None:
    if not math.isfinite(price) or price <= 0:
        raise ValueError(f"price {price!r} must be a finite number above 0")


def _check_position(coin: str, position: Position) -> None:
    problems = []
    if position.coin != coin:
        problems.append(f"is stored under {coin!r}")
    if position.side not in ("long", "short"):
        problems.append(f"has side {position.side!r}")
    if not position.quantity > 0 or not position.entry_price > 0 or not position.margin_usd > 0:
        problems.append("needs a quantity, an entry price and a margin above 0")
    if position.leverage < 1:
        problems.append(f"has leverage {position.leverage}")
    if problems:
        raise InvariantError(f"position on {position.coin} " + ", ".join(problems))


def _price_at(bars: Bars, at_ns: int) -> float:
    """Return the open of the candle starting at `at_ns`, else the last close before it."""
    i = int(bars.open_ns.searchsorted(at_ns, side="left"))
    if i < len(bars) and int(bars.open_ns[i]) == at_ns:
        return float(bars.open[i])
    if i > 0:
        return float(bars.close[i - 1])
    if len(bars) > 0:
        return float(bars.open[0])
    raise DataUnavailableError(
        f"no candle near {ns_to_datetime(at_ns).isoformat()} to price the funding settlement"
    )
