"""Domain objects shared by every layer: market state, positions, fills, intents.

Frozen dataclasses, plain floats in the quote currency (USD/USDT/USDC treated alike), UTC-aware
datetimes. Nothing here performs I/O or reads the clock.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

Signal = Literal["buy_to_enter", "sell_to_enter", "hold", "close_position"]
SIGNALS: Final[tuple[Signal, ...]] = ("buy_to_enter", "sell_to_enter", "hold", "close_position")

PositionSide = Literal["long", "short"]
OrderSide = Literal["buy", "sell"]
FillReason = Literal["entry", "close_position", "stop_loss", "take_profit", "liquidation"]
EXIT_REASONS: Final[tuple[FillReason, ...]] = (
    "close_position",
    "stop_loss",
    "take_profit",
    "liquidation",
)

# The six coins nof1's Alpha Arena traded, in the order its prompts list them.
ALPHA_ARENA_COINS: Final[tuple[str, ...]] = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")

# A candle frame: these columns, indexed by the candles' UTC open times under this name.
CANDLE_COLUMNS: Final[tuple[str, ...]] = ("open", "high", "low", "close", "volume")
CANDLE_INDEX_NAME: Final = "open_time"

_TIMEFRAME_RE: Final = re.compile(r"^(\d+)([smhdw])$")
_TIMEFRAME_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@functools.lru_cache(maxsize=64)
def timeframe_to_timedelta(timeframe: str) -> timedelta:
    """Return the length of a ccxt-style timeframe such as `3m`, `4h` or `1d`."""
    match = _TIMEFRAME_RE.match(timeframe.strip())
    if match is None:
        raise ValueError(
            f"timeframe {timeframe!r} is not understood: "
            "use a number and a unit, e.g. 1m, 3m, 4h, 1d"
        )
    count, unit = int(match.group(1)), match.group(2)
    if count <= 0:
        raise ValueError(f"timeframe {timeframe!r} must be positive")
    return timedelta(seconds=count * _TIMEFRAME_UNIT_SECONDS[unit])


def ensure_utc(moment: datetime) -> datetime:
    """Return `moment` as a UTC-aware datetime; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def quota_day(at: datetime) -> date:
    """Return the quota day `at` falls in (quotas are counted per UTC day)."""
    return at.astimezone(UTC).date()


def next_quota_day_at(at: datetime) -> datetime:
    """Return when the quota day after the one holding `at` begins."""
    day = quota_day(at)
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def floor_time(moment: datetime, step: timedelta) -> datetime:
    """Return the start of the `step`-long bucket (aligned to the Unix epoch) holding `moment`."""
    moment = ensure_utc(moment)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    buckets = (moment - epoch) // step
    return epoch + buckets * step


@dataclass(frozen=True, slots=True)
class MarketRules:
    """What the exchange allows for one market: precision and minimums, used by the risk checks.

    `amount_step` and `price_step` are increments (0.001 means three decimals); `None` means the
    exchange did not say and no rounding is applied.
    """

    symbol: str
    amount_step: float | None = None
    price_step: float | None = None
    min_amount: float | None = None
    min_notional_usd: float | None = None
    contract_size: float = 1.0


@dataclass(frozen=True, slots=True)
class CoinSnapshot:
    """Everything known about one coin's perpetual at the snapshot time.

    `intraday` and `context` hold only **closed** candles (open time + timeframe <= snapshot time),
    indexed by UTC open time, with the columns `open, high, low, close, volume` and the indicator
    columns named in `app.indicators` (added by the market-data adapter). `None` in a field means
    the exchange could not give it; its name is then in `missing` so the prompt can say
    "not available" instead of inventing a zero.
    """

    coin: str
    symbol: str
    last_price: float
    intraday: pd.DataFrame
    context: pd.DataFrame
    funding_rate: float | None = None
    next_funding_at: datetime | None = None
    open_interest: float | None = None
    open_interest_avg: float | None = None
    mark_price: float | None = None
    missing: frozenset[str] = frozenset()
    rules: MarketRules | None = None


class CandleTable:
    """One timeframe's candles and indicators over a whole history, computed once (a backtest's).

    `values` is `frame` as one float64 block (a view when the frame is one block), `open_ns` its
    open times as UTC epoch nanoseconds and `positions` each column's place in `values`.
    `CandleRows` hands out rows of it: a pandas slice per coin and timeframe every cycle cost more
    than the rest of a replayed snapshot, and most cycles never need the frame itself.
    """

    __slots__ = ("__weakref__", "columns", "frame", "open_ns", "positions", "values")

    frame: pd.DataFrame
    values: npt.NDArray[np.float64]
    open_ns: npt.NDArray[np.int64]
    columns: tuple[str, ...]
    positions: dict[str, int]

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.values = frame.to_numpy(dtype=np.float64)
        self.open_ns = index_ns(frame)
        self.columns = tuple(map(str, frame.columns.tolist()))
        self.positions = {column: position for position, column in enumerate(self.columns)}

    def rows(self, start: int, end: int) -> CandleRows:
        """Return rows `start:end` (positions, as in `iloc`)."""
        return CandleRows(self, start, end)


class CandleRows:
    """Rows `start:end` of a `CandleTable`: the frame `frame()` builds, without building it yet."""

    __slots__ = ("_frame", "end", "start", "table")

    table: CandleTable
    start: int
    end: int
    _frame: pd.DataFrame | None

    def __init__(self, table: CandleTable, start: int, end: int) -> None:
        self.table = table
        self.start = start
        self.end = end
        self._frame = None

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def frame(self) -> pd.DataFrame:
        """Return the rows as a frame (sliced once, then the same object)."""
        if self._frame is None:
            self._frame = self.table.frame.iloc[self.start : self.end]
        return self._frame


class PrecomputedCoinSnapshot(CoinSnapshot):
    """A `CoinSnapshot` whose candles are rows of precomputed tables (the backtest's history).

    `intraday` and `context` are the same frames as ever, built on first read; the prompt and the
    freshness checks read `intraday_rows` and `context_rows` instead and never need them.
    `dataclasses.replace` does not apply (give a plain `CoinSnapshot` the frames instead).
    """

    __slots__ = ("context_rows", "intraday_rows")

    intraday_rows: CandleRows
    context_rows: CandleRows

    def __init__(
        self,
        *,
        coin: str,
        symbol: str,
        last_price: float,
        intraday_rows: CandleRows,
        context_rows: CandleRows,
        funding_rate: float | None = None,
        next_funding_at: datetime | None = None,
        open_interest: float | None = None,
        open_interest_avg: float | None = None,
        mark_price: float | None = None,
        missing: frozenset[str] = frozenset(),
        rules: MarketRules | None = None,
    ) -> None:
        # The frozen dataclass refuses plain assignment, as it does in its own __init__.
        set_field = object.__setattr__
        set_field(self, "coin", coin)
        set_field(self, "symbol", symbol)
        set_field(self, "last_price", last_price)
        set_field(self, "intraday_rows", intraday_rows)
        set_field(self, "context_rows", context_rows)
        set_field(self, "funding_rate", funding_rate)
        set_field(self, "next_funding_at", next_funding_at)
        set_field(self, "open_interest", open_interest)
        set_field(self, "open_interest_avg", open_interest_avg)
        set_field(self, "mark_price", mark_price)
        set_field(self, "missing", missing)
        set_field(self, "rules", rules)

    @property
    def intraday(self) -> pd.DataFrame:
        """Return the closed intraday candles as a frame."""
        return self.intraday_rows.frame()

    @property
    def context(self) -> pd.DataFrame:
        """Return the closed context candles as a frame."""
        return self.context_rows.frame()

    def __reduce__(self) -> tuple[type[CoinSnapshot], tuple[object, ...]]:
        # Pickled (to another process) as the plain snapshot it stands for.
        return CoinSnapshot, tuple(getattr(self, name) for name in CoinSnapshot.__match_args__)


@dataclass(frozen=True, slots=True)
class MarketSnapshot:
    """The market as one cycle sees it at `at`: one `CoinSnapshot` per coin, in prompt order.

    `notes` says what the adapter did to the data it was given (implausible candles dropped),
    so the cycle's record can say it too.
    """

    at: datetime
    intraday_timeframe: str
    context_timeframe: str
    coins: Mapping[str, CoinSnapshot]
    notes: tuple[str, ...] = ()

    def price(self, coin: str) -> float:
        """Return the last price of `coin`."""
        return self.coins[coin].last_price

    def prices(self) -> dict[str, float]:
        """Return the last price of every coin."""
        return {coin: snap.last_price for coin, snap in self.coins.items()}


@dataclass(frozen=True, slots=True)
class ExitPlan:
    """What the model said would end the trade: a target, a stop and a condition in words."""

    profit_target: float | None = None
    stop_loss: float | None = None
    invalidation_condition: str = ""


@dataclass(frozen=True, slots=True)
class Position:
    """An open isolated-margin perpetual position of one agent on one coin.

    `quantity` is in coin units and always positive; `side` gives the direction. `margin_usd` is
    the collateral locked for it (notional at entry / leverage). `funding_usd` is the funding paid
    so far (negative when received). `entry_fee_usd` is already taken from cash.
    """

    coin: str
    side: PositionSide
    quantity: float
    entry_price: float
    leverage: int
    margin_usd: float
    liquidation_price: float
    opened_at: datetime
    exit_plan: ExitPlan = field(default_factory=ExitPlan)
    confidence: float | None = None
    risk_usd: float | None = None
    justification: str = ""
    entry_fee_usd: float = 0.0
    funding_usd: float = 0.0

    @property
    def direction(self) -> int:
        """Return +1 for a long and -1 for a short."""
        return 1 if self.side == "long" else -1

    def unrealized_pnl_usd(self, price: float) -> float:
        """Return the price PnL at `price`, before the exit fee."""
        return self.direction * (price - self.entry_price) * self.quantity

    def notional_usd(self, price: float) -> float:
        """Return the position's value at `price`."""
        return abs(self.quantity) * price


@dataclass(frozen=True, slots=True)
class Fill:
    """One simulated execution: an entry, a close, or an exit the monitor triggered."""

    coin: str
    side: OrderSide
    quantity: float
    price: float
    reference_price: float
    fee_usd: float
    reason: FillReason
    filled_at: datetime
    realized_pnl_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class FundingPayment:
    """Funding settled on an open position: `amount_usd` > 0 is paid by the account."""

    coin: str
    rate: float
    mark_price: float
    quantity: float
    amount_usd: float
    settled_at: datetime


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """A position from entry to exit, with everything that moved cash along the way.

    `gross_pnl_usd` is the price PnL; `net_pnl_usd` = gross - entry fee - exit fee - funding.
    """

    coin: str
    side: PositionSide
    quantity: float
    leverage: int
    entry_price: float
    exit_price: float
    opened_at: datetime
    closed_at: datetime
    entry_fee_usd: float
    exit_fee_usd: float
    funding_usd: float
    gross_pnl_usd: float
    net_pnl_usd: float
    exit_reason: FillReason

    @property
    def holding_time(self) -> timedelta:
        """Return how long the position was open."""
        return self.closed_at - self.opened_at


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """A checked instruction for the paper exchange: open or close one coin's position.

    `requested_quantity` is what the model asked for; `quantity` is what will be filled after
    rounding to the market's precision. `note` says why they differ, so nothing changes silently.
    """

    coin: str
    action: Literal["open", "close"]
    side: PositionSide
    quantity: float
    leverage: int = 1
    exit_plan: ExitPlan = field(default_factory=ExitPlan)
    confidence: float | None = None
    risk_usd: float | None = None
    justification: str = ""
    requested_quantity: float | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A decision the risk checks refused, with the reason stored beside it."""

    coin: str
    signal: Signal
    reason: str


@dataclass(frozen=True, slots=True)
class AccountView:
    """A priced, read-only view of an account at one moment (for prompts, reports, snapshots)."""

    at: datetime
    starting_cash_usd: float
    cash_usd: float
    margin_usd: float
    unrealized_pnl_usd: float
    realized_pnl_usd: float
    fees_paid_usd: float
    funding_paid_usd: float
    positions: Mapping[str, Position]

    @property
    def equity_usd(self) -> float:
        """Return the account value: cash + locked margin + unrealized PnL."""
        return self.cash_usd + self.margin_usd + self.unrealized_pnl_usd

    @property
    def total_return_pct(self) -> float:
        """Return the return since the start, in percent."""
        if self.starting_cash_usd == 0:
            return 0.0
        return (self.equity_usd / self.starting_cash_usd - 1.0) * 100.0


# -- accounts ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaperCosts:
    """What trading costs on the simulated exchange (fractions: 0.00045 = 4.5 bps)."""

    fee_rate: float = 0.00045
    slippage_rate: float = 0.0001
    maintenance_margin_rate: float = 0.005

    def __post_init__(self) -> None:
        if min(self.fee_rate, self.slippage_rate, self.maintenance_margin_rate) < 0:
            raise ValueError("fee, slippage and maintenance margin rates must be >= 0")
        if self.slippage_rate >= 1 or self.maintenance_margin_rate >= 1:
            raise ValueError("slippage and maintenance margin rates are fractions below 1")


def liquidation_price(
    *, side: PositionSide, entry_price: float, leverage: int, maintenance_margin_rate: float
) -> float:
    """Return the isolated-margin liquidation price (docs/simulation.md gives the rule)."""
    if side == "long":
        return entry_price * (1.0 - 1.0 / leverage + maintenance_margin_rate)
    return entry_price * (1.0 + 1.0 / leverage - maintenance_margin_rate)


@dataclass(frozen=True, slots=True)
class AccountState:
    """Everything needed to rebuild a `PaperAccount` exactly (what the repository persists)."""

    starting_cash_usd: float
    cash_usd: float
    realized_pnl_usd: float = 0.0
    fees_paid_usd: float = 0.0
    funding_paid_usd: float = 0.0
    positions: Mapping[str, Position] = field(default_factory=dict)

    @classmethod
    def from_ledger(
        cls,
        starting_cash_usd: float,
        *,
        fills: Iterable[Fill],
        funding_payments: Iterable[FundingPayment],
        open_positions: Iterable[Position],
    ) -> AccountState:
        """Derive the state from the fill and funding ledgers plus the open positions.

        Cash is never stored here: it follows from the books' identity (cash = starting cash +
        realized PnL - fees - funding - open margin), so a state rebuilt this way always balances
        (up to float summation order).
        """
        positions = {p.coin: p for p in open_positions}
        realized = fees = 0.0
        for fill in fills:
            realized += fill.realized_pnl_usd
            fees += fill.fee_usd
        funding = sum(payment.amount_usd for payment in funding_payments)
        margin = sum(p.margin_usd for p in positions.values())
        return cls(
            starting_cash_usd=starting_cash_usd,
            cash_usd=starting_cash_usd + realized - fees - funding - margin,
            realized_pnl_usd=realized,
            fees_paid_usd=fees,
            funding_paid_usd=funding,
            positions=positions,
        )


# -- model calls ------------------------------------------------------------------------------

Role = Literal["system", "user", "assistant"]


class LlmMode(StrEnum):
    """How models are asked; each member equals its string, so `mode == "replay"` holds.

    `live` always calls; `cached` takes the stored answer to a prompt asked before and calls
    otherwise; `replay` takes stored answers only and never calls a model.
    """

    LIVE = "live"
    CACHED = "cached"
    REPLAY = "replay"

    def __repr__(self) -> str:
        # Messages quote the mode with !r: they keep saying 'replay', as the plain string did.
        return repr(self.value)


@dataclass(frozen=True, slots=True)
class ChartImage:
    """A PNG chart: its bytes, their sha256 (the storage key), size and what it shows.

    `spec_key` is the sha256 of what was drawn (the chart spec: candles, levels, layout and the
    renderer's version), known before drawing: the answer cache and a replay name the image by
    it without rendering. `caption` is one line: coins, timeframes and the UTC time range.
    """

    png: bytes
    sha256: str
    width_px: int
    height_px: int
    caption: str
    kind: str
    coins: tuple[str, ...]
    timeframes: tuple[str, ...]
    spec_key: str

    @property
    def size_bytes(self) -> int:
        """Return the PNG's length in bytes."""
        return len(self.png)

    def data_url(self) -> str:
        """Return the image as a `data:image/png;base64,...` URI (an `image_url` part's url)."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass(frozen=True, slots=True, eq=False)
class ImagePart:
    """A chart image of a prompt, named before it is drawn.

    `key` is the chart's spec key (a sha256 of everything it shows, with the renderer's
    version; the same key always draws the same PNG bytes), so the answer cache and a replay
    identify the image without drawing it; `image()` draws it (once: the source remembers).
    """

    key: str
    caption: str
    kind: str
    width_px: int
    height_px: int
    draw: Callable[[], ChartImage]

    def image(self) -> ChartImage:
        """Return the drawn image."""
        return self.draw()


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a chat prompt; a vision agent's user message also carries chart images
    (sent as content parts after the text)."""

    role: Role
    content: str
    images: tuple[ImagePart, ...] = ()

    def without_images(self) -> ChatMessage:
        """Return the message as a text-only model gets it."""
        return ChatMessage(self.role, self.content) if self.images else self


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one call, as the provider reported them (0 where it did not)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """Per-call options; the provider's traits decide which of them are actually sent."""

    temperature: float | None = None
    max_tokens: int | None = None
    json_mode: bool = False
    stream: bool | None = None
    timeout_s: float | None = None
    # None keeps the model's own default; True/False switch thinking where the provider can.
    thinking: bool | None = None
    # The whole call's time budget (every retry and fallback model), from when it starts: no
    # request starts that cannot finish in time, and the last one's timeout is cut to what is left.
    budget_s: float | None = None


@dataclass(frozen=True, slots=True)
class ChatResult:
    """What a model answered and what it cost."""

    text: str
    provider: str
    model: str
    reasoning: str = ""
    finish_reason: str | None = None
    usage: TokenUsage = field(default_factory=TokenUsage)
    latency_s: float = 0.0
    rate_limit_headers: Mapping[str, str] = field(default_factory=dict)
    cache_hit: bool = False
    # Every request made for this answer (failed ones first, then the one that answered); empty
    # for a cache hit, which made none.
    attempts: tuple[CallAttempt, ...] = ()
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallAttempt:
    """One request inside a call: which model was tried and how it ended (for `llm_call` rows)."""

    provider: str
    model: str
    outcome: str
    error: str | None = None
    latency_s: float = 0.0
    status_code: int | None = None
    rate_limit_headers: Mapping[str, str] = field(default_factory=dict)
    usage: TokenUsage = field(default_factory=TokenUsage)
    # The `llm_call` row written (outcome `pending`) before the request was sent, whose
    # `quota_usage` call was counted then: the finished row replaces it. None: not written.
    pending_id: int | None = None


# Outcomes of a `CallAttempt` (and its `llm_call` row) that sent no request, so spent no quota:
# a call held because every model of its chain was skipped for quota or a cooldown
# (`held_quota`) or because none is served today (`held_not_served`); a replay of a call the
# recorded run got no answer for (`replayed_failure`); a call that never reached a model
# (`error`: a local failure, or cut before its first request).
# A request recorded before it was sent and not finished yet (`pending`), or whose process
# stopped before it finished (`interrupted`, set at the next start): both were sent.
PENDING: Final = "pending"
INTERRUPTED: Final = "interrupted"
HELD_QUOTA: Final = "held_quota"
HELD_NOT_SERVED: Final = "held_not_served"
REPLAYED_FAILURE: Final = "replayed_failure"
NOT_SENT_OUTCOMES: Final = frozenset({HELD_QUOTA, HELD_NOT_SERVED, REPLAYED_FAILURE, "error"})


def was_sent(outcome: str) -> bool:
    """Return True when an attempt of this outcome sent a request (and so spent quota)."""
    return outcome not in NOT_SENT_OUTCOMES


@dataclass(frozen=True, slots=True)
class RecordedFailure:
    """A call that got no answer, as the response cache keeps it: `kind` names the error group.

    A replay raises the same kind of error where the recorded run got none, so the agent holds
    at the same cycles.
    """

    kind: str
    message: str
    provider: str
    model: str


# The failure-marker kind of a recorded call that got no answer, by the outcome of its last
# `llm_call` row: a replay of that run raises the same kind of error (`app.llm.fallback`). Every
# model skipped after a 429 or "not served" ends the chain with `no_model`; a 401/402 stopped the
# agent (`auth`, `billing`). Anything else (a local error, a replayed failure, an interrupted
# request) replays as `unavailable`: the agent holds.
RECORDED_OUTCOME_KINDS: Final[Mapping[str, str]] = {
    HELD_QUOTA: "no_model",
    HELD_NOT_SERVED: "no_model",
    "rate_limited": "no_model",
    "not_served": "no_model",
    "timeout": "timeout",
    "cancelled": "cancelled",
    "truncated": "truncated",
    "empty_text": "empty",
    "no_choices": "empty",
    "images_refused": "images_refused",
    "bad_request": "rejected",
    "auth_error": "auth",
    "billing_error": "billing",
}


def recorded_failure_kind(last_outcome: str) -> str:
    """Return the failure kind of a recorded call whose last request ended with `last_outcome`."""
    return RECORDED_OUTCOME_KINDS.get(last_outcome, "unavailable")


@dataclass(frozen=True, slots=True)
class QuotaDelta:
    """What some requests to one model on one quota day add to its `quota_usage` row."""

    provider: str
    model: str
    day: date
    at: datetime
    calls: int = 0
    successes: int = 0
    failures: int = 0
    rate_limited: int = 0
    headers: Mapping[str, str] | None = None
    last_status: str | None = None
    last_error: str | None = None
    exhausted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ExhaustedModel:
    """A model found out of quota (or not served) earlier in its quota day: skipped until then."""

    provider: str
    model: str
    not_served: bool
    message: str


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model's requests on one quota day and its last-seen limits (a `quota_usage` row)."""

    provider: str
    model: str
    day: date
    calls: int
    successes: int
    failures: int
    rate_limited: int
    requests_limit: int | None
    requests_remaining: int | None
    model_requests_limit: int | None
    model_requests_remaining: int | None
    last_status: str | None
    last_error: str | None
    exhausted_at: datetime | None
    updated_at: datetime | None


def prompt_hash(messages: Sequence[ChatMessage]) -> str:
    """Return the sha256 of the messages' canonical JSON (compact, `[{"role", "content"}, ...]`).

    Messages with chart images hash their images' keys too (a text-only prompt hashes as it
    always did), so a prompt with other charts is another prompt.
    """
    text = pairs_hash(tuple((m.role, m.content) for m in messages))
    images = [[index, *image_keys(m.images)] for index, m in enumerate(messages) if m.images]
    if not images:
        return text
    canonical = json.dumps({"text": text, "images": images}, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def image_keys(images: Iterable[ImagePart]) -> list[str]:
    """Return what identifies images in a prompt hash: each one's key and caption."""
    return [f"{image.key}:{image.caption}" for image in images]


# The same prompt is hashed for the cache key of each model in a chain and again for its record.
@functools.lru_cache(maxsize=32)
def pairs_hash(pairs: tuple[tuple[str, str], ...]) -> str:
    """Return `prompt_hash` of messages given as (role, content) pairs.

    The digest is the sha256 of `json.dumps([{"role": role, "content": content}, ...],
    ensure_ascii=False, separators=(",", ":"))`, fed piece by piece: the first message (the
    system prompt, the same every cycle) is encoded and hashed once, its hash state copied.
    """
    if not pairs:
        return hashlib.sha256(b"[]").hexdigest()
    digest = _opening_digest(*pairs[0]).copy()
    for role, content in pairs[1:]:
        digest.update(_message_json(role, content, b","))
    digest.update(b"]")
    return digest.hexdigest()


# What `json.dumps(..., ensure_ascii=False)` writes for a string (the C encoder's own function).
_json_string: Final[Callable[[str], str]] = json.encoder.encode_basestring


def _message_json(role: str, content: str, before: bytes) -> bytes:
    """Return one message as the canonical prompt JSON holds it, after `before` ("[" or ",")."""
    return before + (
        '{"role":' + _json_string(role) + ',"content":' + _json_string(content) + "}"
    ).encode("utf-8")


@functools.lru_cache(maxsize=8)
def _opening_digest(role: str, content: str) -> hashlib._Hash:
    """Return the sha256 state after a prompt's opening "[" and first message (copy it)."""
    return hashlib.sha256(_message_json(role, content, b"["))


@dataclass(frozen=True, slots=True)
class Bars:
    """A block of one coin's candles as arrays: open times (UTC epoch ns) and OHLC prices.

    The exit monitor scans these; arrays keep a backtest's per-cycle scan free of pandas overhead.
    """

    open_ns: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.open_ns.shape[0])

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Bars:
        """Return the candles of a frame indexed by UTC open time with open/high/low/close."""
        index = frame.index
        if not isinstance(index, pd.DatetimeIndex):
            raise ValueError("candles must be indexed by their UTC open time (DatetimeIndex)")
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        return cls(
            open_ns=index.as_unit("ns").asi8,
            open=frame["open"].to_numpy(dtype=np.float64),
            high=frame["high"].to_numpy(dtype=np.float64),
            low=frame["low"].to_numpy(dtype=np.float64),
            close=frame["close"].to_numpy(dtype=np.float64),
        )


@dataclass(frozen=True, slots=True)
class Settlements:
    """Funding settlements as arrays: times (UTC epoch ns), rates, and mark prices (NaN: none)."""

    settled_ns: npt.NDArray[np.int64]
    rates: npt.NDArray[np.float64]
    marks: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.settled_ns.shape[0])

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Settlements:
        """Return settlements from a frame with `rate` (or `funding_rate`) and `mark_price`."""
        index = frame.index
        if not isinstance(index, pd.DatetimeIndex):
            raise ValueError("funding must be indexed by its UTC settlement time (DatetimeIndex)")
        index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        column = "rate" if "rate" in frame.columns else "funding_rate"
        marks = (
            frame["mark_price"].to_numpy(dtype=np.float64)
            if "mark_price" in frame.columns
            else np.full(len(frame), np.nan)
        )
        return cls(
            settled_ns=index.as_unit("ns").asi8,
            rates=frame[column].to_numpy(dtype=np.float64),
            marks=marks,
        )


def ns_to_datetime(ns: int) -> datetime:
    """Return a UTC-aware datetime for epoch nanoseconds."""
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC).replace(
        microsecond=(ns % 1_000_000_000) // 1000
    )


def datetime_to_ns(moment: datetime) -> int:
    """Return epoch nanoseconds of a datetime (naive values are taken as UTC)."""
    moment = ensure_utc(moment)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    delta = moment - epoch
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def index_ns(frame: pd.DataFrame | pd.Series) -> npt.NDArray[np.int64]:
    """Return a frame's DatetimeIndex as int64 nanoseconds since the epoch, whatever its unit."""
    return np.asarray(pd.DatetimeIndex(frame.index).as_unit("ns").asi8)


def empty_candles() -> pd.DataFrame:
    """Return an empty candle frame: the usual columns and an empty UTC index."""
    return pd.DataFrame(
        {name: np.array([], dtype=float) for name in CANDLE_COLUMNS},
        index=pd.DatetimeIndex([], tz="UTC", name=CANDLE_INDEX_NAME).as_unit("ns"),
    )


def candles_from_rows(times_ms: npt.ArrayLike, values: npt.ArrayLike) -> pd.DataFrame:
    """Build a candle frame from open times in ms and rows of open, high, low, close, volume."""
    times = np.asarray(times_ms, dtype=np.int64)
    if len(times) == 0:
        return empty_candles()
    index = pd.DatetimeIndex(
        pd.to_datetime(times, unit="ms", utc=True), name=CANDLE_INDEX_NAME
    ).as_unit("ns")
    return pd.DataFrame(np.asarray(values, dtype=float), index=index, columns=list(CANDLE_COLUMNS))
