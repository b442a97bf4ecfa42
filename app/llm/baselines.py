"""Rule-based agents under the provider name `baseline`, answering in the models' schema.

They go through the same risk checks, paper exchange and records as the LLMs, so every report can
set the models beside them:
- `buy_and_hold`: nof1's benchmark line. Equal-weight long of every coin at 1x on its first cycle,
  then holds forever (its stop and target are placed so far away they never trigger in practice).
- `ema_trend`: a simple trend follower on the 4h context candles. Long while EMA20 > EMA50 and
  the close is above EMA20, short in the mirror case, 3x leverage, stop 2 ATR14 and target 3 ATR14
  away, 1% of account value at risk per trade; closes when the trend flips against it.
- `random` (`random@SEED`, `random@SEED/ENTRIES_PER_DAY`): the luck line. Enters flat coins at
  random, on a long or a short, with ema_trend's exit plan and sizing; reproducible from its seed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from app.decisions import TradeDecision
from app.domain import datetime_to_ns, ensure_utc, timeframe_to_timedelta
from app.errors import ConfigError
from app.ports import DecisionRequest, Strategy, StrategyAnswer

# Far enough that no real market reaches them, near enough to stay valid prices.
_HODL_STOP_FRACTION: Final = 0.02
_HODL_TARGET_MULTIPLE: Final = 50.0
# Leave room for the taker fee and slippage so the risk check's cash test passes.
_HODL_CASH_BUFFER: Final = 0.995

_TREND_LEVERAGE: Final = 3
_TREND_RISK_FRACTION: Final = 0.01
_TREND_STOP_ATR: Final = 2.0
_TREND_TARGET_ATR: Final = 3.0

# Entries per coin per flat day; chosen so that random trades about as often as ema_trend on
# real data (docs/evaluation.md).
DEFAULT_RANDOM_ENTRIES_PER_DAY: Final = 8.0
_DAY: Final = timedelta(days=1)
_TWO_POW_64: Final = float(2**64)


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
        long = trend > 0
        return _atr_entry(
            request,
            coin,
            long=long,
            atr14=atr14,
            max_position_margin_pct=self.max_position_margin_pct,
            invalidation=f"4h EMA20 crosses {'below' if long else 'above'} EMA50",
            justification=(
                f"4h trend {'up' if long else 'down'}: EMA20 {ema20:.6g} vs EMA50 {ema50:.6g}, "
                f"close {close:.6g}."
            ),
        )


def _context_atr14(request: DecisionRequest, coin: str) -> float | None:
    """Return the newest closed context candle's ATR14, or None while it is not warmed up."""
    context = request.snapshot.coins[coin].context
    if context.empty:
        return None
    atr14 = float(context.iloc[-1]["atr14"])
    return atr14 if math.isfinite(atr14) and atr14 > 0 else None


def _atr_entry(
    request: DecisionRequest,
    coin: str,
    *,
    long: bool,
    atr14: float,
    max_position_margin_pct: float,
    invalidation: str,
    justification: str,
    confidence: float = 0.5,
) -> TradeDecision:
    """Return an entry at 3x with its stop 2 ATR14 and its target 3 ATR14 away, sized so the stop
    loses 1% of the account value (within an equal share of the cash and the margin limit)."""
    price = request.snapshot.coins[coin].last_price
    stop_distance = _TREND_STOP_ATR * atr14
    equity = request.account.equity_usd
    quantity = _TREND_RISK_FRACTION * equity / stop_distance
    # Never commit more than an equal share of the cash, nor more than the limit, as margin.
    margin_cap_usd = min(
        request.account.cash_usd / len(request.coins),
        equity * max_position_margin_pct / 100,
    )
    max_quantity = margin_cap_usd * _TREND_LEVERAGE / price
    quantity = min(quantity, max_quantity * _HODL_CASH_BUFFER)
    if quantity <= 0 or stop_distance >= price:
        return _hold(coin)
    sign = 1 if long else -1
    return TradeDecision(
        coin=coin,
        signal="buy_to_enter" if long else "sell_to_enter",
        quantity=quantity,
        leverage=_TREND_LEVERAGE,
        profit_target=price + sign * _TREND_TARGET_ATR * atr14,
        stop_loss=price - sign * stop_distance,
        invalidation_condition=invalidation,
        confidence=confidence,
        risk_usd=_TREND_RISK_FRACTION * equity,
        justification=justification,
    )


class RandomStrategy:
    """Enter at random, with ema_trend's exit plan and sizing: the "luck" line.

    Each cycle, every coin without a position is entered with probability
    `entries_per_day x cycle length / 1 day`, long or short with equal chance; the cycle length is
    the snapshot's intraday timeframe (the cadence in backtests and, by default, live). Entries
    have ema_trend's shape: 3x, stop 2 ATR14 and target 3 ATR14 away on the context candles, 1% of
    the account value at risk. Positions end only at their stop or target (there is no signal to
    close on). The draws are a hash of (seed, coin, cycle time), so a window gives the same trades
    whatever order windows or agents run in, and two windows that overlap draw the same numbers
    at the same times.

    `entries_per_day` is the rate while the coin is flat: a coin that holds a position for part
    of the day enters less often than that (docs/evaluation.md has the measured frequencies).
    """

    uses_prompt = False

    def __init__(
        self,
        name: str = "random",
        *,
        seed: int = 0,
        entries_per_day: float = DEFAULT_RANDOM_ENTRIES_PER_DAY,
        max_position_margin_pct: float = 100.0,
    ) -> None:
        if seed < 0:
            raise ValueError("the seed of baseline:random is a non-negative integer")
        if not entries_per_day > 0 or not math.isfinite(entries_per_day):
            raise ValueError("entries_per_day of baseline:random must be a positive number")
        self.name = name
        self.seed = seed
        self.entries_per_day = entries_per_day
        self.max_position_margin_pct = max_position_margin_pct

    def entry_probability(self, cycle: timedelta) -> float:
        """Return the chance that a flat coin is entered in one cycle of length `cycle`."""
        return min(1.0, self.entries_per_day * (cycle / _DAY))

    async def decide(self, request: DecisionRequest) -> StrategyAnswer:
        """Enter flat coins at random; hold the rest until their stop or target."""
        cycle = timeframe_to_timedelta(request.snapshot.intraday_timeframe)
        chance = self.entry_probability(cycle)
        decisions = [self._decide_coin(request, coin, chance) for coin in request.coins]
        return StrategyAnswer(decisions=tuple(decisions))

    def _decide_coin(self, request: DecisionRequest, coin: str, chance: float) -> TradeDecision:
        if coin in request.account.positions:
            return _hold(coin)
        enter_draw, side_draw = random_draws(self.seed, coin, request.at)
        if enter_draw >= chance:
            return _hold(coin)
        atr14 = _context_atr14(request, coin)
        if atr14 is None:
            return _hold(coin)
        long = side_draw < 0.5
        return _atr_entry(
            request,
            coin,
            long=long,
            atr14=atr14,
            max_position_margin_pct=self.max_position_margin_pct,
            invalidation="none: random baseline, exits at its stop or target",
            justification=(
                f"Random baseline (seed {self.seed}): {'long' if long else 'short'} "
                f"drawn at {chance:.3g} entries per cycle."
            ),
        )


def random_draws(seed: int, coin: str, at: datetime) -> tuple[float, float]:
    """Return two uniform numbers in [0, 1) that depend only on (seed, coin, at).

    A keyed hash instead of a generator's stream: no state carries from one cycle to the next,
    so the numbers at a time are the same whichever cycle a window starts at.
    """
    at_ns = datetime_to_ns(ensure_utc(at))
    digest = hashlib.blake2b(
        f"{seed}|{coin}|{at_ns}".encode(), digest_size=16, person=b"arena-random"
    ).digest()
    return (
        int.from_bytes(digest[:8], "big") / _TWO_POW_64,
        int.from_bytes(digest[8:], "big") / _TWO_POW_64,
    )


@dataclass(frozen=True, slots=True)
class RandomSpec:
    """The parameters a `random` model string carries: `random[@SEED][/ENTRIES_PER_DAY]`."""

    seed: int = 0
    entries_per_day: float = DEFAULT_RANDOM_ENTRIES_PER_DAY
    explicit_rate: bool = False

    @property
    def group(self) -> str:
        """Return the model without its seed: the seeds of one setup are one "random" line."""
        return f"random/{self.entries_per_day:g}" if self.explicit_rate else "random"


_RANDOM_MODEL = re.compile(r"random(?:@(?P<seed>\d{1,18}))?(?:/(?P<rate>\d+(?:\.\d+)?))?")


def parse_random_model(model: str) -> RandomSpec | None:
    """Return the seed and rate of a `random...` model string, None if it is not one.

    Raise `ValueError` for `random...` strings that do not follow the grammar.
    """
    text = model.strip()
    if text != "random" and not text.startswith(("random@", "random/")):
        return None
    found = _RANDOM_MODEL.fullmatch(text)
    if found is None:
        raise ValueError(
            f"baseline {model!r}: write random, random@SEED or random@SEED/ENTRIES_PER_DAY "
            "(e.g. random@7 or random@7/2.5)"
        )
    rate = found.group("rate")
    spec = RandomSpec(
        seed=int(found.group("seed") or 0),
        entries_per_day=float(rate) if rate is not None else DEFAULT_RANDOM_ENTRIES_PER_DAY,
        explicit_rate=rate is not None,
    )
    if not spec.entries_per_day > 0:
        raise ValueError(f"baseline {model!r}: the entries per day must be above 0")
    return spec


def random_model(seed: int, entries_per_day: float | None = None) -> str:
    """Return the model string of `random` with this seed (and rate, if not the default)."""
    rate = "" if entries_per_day is None else f"/{entries_per_day:g}"
    return f"random@{seed}{rate}"


BASELINES: Final[dict[str, Callable[..., Strategy]]] = {
    "buy_and_hold": BuyAndHoldStrategy,
    "ema_trend": EmaTrendStrategy,
    "random": RandomStrategy,
}


def build_baseline(name: str, model: str, *, max_position_margin_pct: float = 100.0) -> Strategy:
    """Return the baseline `model` (e.g. `buy_and_hold`, `random@7`) for the agent `name`."""
    try:
        spec = parse_random_model(model)
    except ValueError as error:
        raise ConfigError(f"agent {name!r}: {error}") from None
    if spec is not None:
        return RandomStrategy(
            name,
            seed=spec.seed,
            entries_per_day=spec.entries_per_day,
            max_position_margin_pct=max_position_margin_pct,
        )
    factory = BASELINES.get(model)
    if factory is None:
        raise ConfigError(
            f"agent {name!r}: unknown baseline {model!r}; use one of "
            "buy_and_hold, ema_trend, random[@SEED][/ENTRIES_PER_DAY]"
        )
    return factory(name, max_position_margin_pct=max_position_margin_pct)
