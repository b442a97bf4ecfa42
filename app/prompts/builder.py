"""Build the system and user messages of one decision call, in nof1's layout.

The user message has three parts: a preamble (time, invocation count), the market section and the
account section. The market section depends only on the snapshot, so the engine renders it once
per cycle with `render_market_section` and passes it to `build_messages` for every agent; only
the preamble and the account section are rendered per agent. Same inputs, same bytes: nothing
here reads the clock, the locale or a dict whose order the caller did not choose.
"""

from __future__ import annotations

import functools
import string
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from typing import Final

import numpy as np
import pandas as pd

from app.domain import (
    AccountView,
    CandleRows,
    CandleTable,
    ChatMessage,
    CoinSnapshot,
    MarketSnapshot,
    Position,
    PrecomputedCoinSnapshot,
    datetime_to_ns,
    ensure_utc,
    timeframe_to_timedelta,
)
from app.prompts.formatting import (
    INDICATOR_DIGITS,
    NOT_AVAILABLE,
    PRICE_DIGITS,
    QUANTITY_DIGITS,
    JsonValue,
    RawJson,
    describe_timeframe,
    format_bps_as_pct,
    format_duration,
    format_pct,
    format_series,
    format_sig,
    format_usd,
    json_number,
    json_usd,
    to_json,
)

PROMPT_VERSION: Final = "v1"
# How many closed candles each series shows (nof1 showed 10).
SERIES_LENGTH: Final = 10
NOT_AVAILABLE_TEXT: Final = "not available"

_SYSTEM_TEMPLATE: Final = f"system_{PROMPT_VERSION}.md"
# Open interest and funding are optional per exchange: `CoinSnapshot.missing` names what is absent.
_OPEN_INTEREST: Final = "open_interest"
_OPEN_INTEREST_AVG: Final = "open_interest_avg"
_FUNDING_RATE: Final = "funding_rate"


@functools.cache
def _system_template() -> string.Template:
    source = resources.files("app.prompts").joinpath("templates", _SYSTEM_TEMPLATE)
    return string.Template(source.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=64)
def render_system_prompt(
    *,
    coins: tuple[str, ...],
    fee_bps: float,
    slippage_bps: float,
    max_leverage: int,
    max_position_margin_pct: float,
) -> str:
    """Return the system prompt: the trading rules with the actual limits and costs, and the schema.

    `max_position_margin_pct` is in percent of the account value (50.0 means half).
    """
    round_trip_bps = 2.0 * (fee_bps + slippage_bps)
    return _system_template().substitute(
        coins=", ".join(coins),
        example_coin=coins[0] if coins else "BTC",
        max_leverage=str(max_leverage),
        max_margin_pct=format_sig(max_position_margin_pct, 6),
        fee_pct=format_bps_as_pct(fee_bps),
        slippage_pct=format_bps_as_pct(slippage_bps),
        round_trip_pct=format_bps_as_pct(round_trip_bps),
        round_trip_10x_pct=format_bps_as_pct(10.0 * round_trip_bps),
    )


def render_market_section(snapshot: MarketSnapshot) -> str:
    """Return the market part of the user message: the notes, then one block per coin."""
    intraday = describe_timeframe(snapshot.intraday_timeframe)
    context = describe_timeframe(snapshot.context_timeframe)
    parts = [
        "**ALL OF THE PRICE OR SIGNAL DATA BELOW IS ORDERED: OLDEST → NEWEST**",
        f"**Timeframes note:** intraday series are {intraday} candles (the last "
        f"{SERIES_LENGTH} closed candles; prices are candle closes). The longer-term context "
        f"uses {context} candles. Every candle shown has closed.",
        "---",
        "### CURRENT MARKET STATE FOR ALL COINS",
    ]
    blocks = [_coin_block(snapshot, coin) for coin in snapshot.coins.values()]
    return "\n\n".join(parts) + "\n\n" + "\n\n---\n\n".join(blocks)


def render_context_blocks(snapshot: MarketSnapshot) -> tuple[str, ...]:
    """Return each coin's longer-term context block, as `render_market_section` shows it.

    They change only when a context candle closes (every 4 hours), so a store can keep each once
    and let the market sections of many cycles refer to it.
    """
    return tuple(
        _context_block(_context_tail(snapshot, coin), snapshot.context_timeframe)
        for coin in snapshot.coins.values()
    )


def render_account_section(
    snapshot: MarketSnapshot,
    account: AccountView,
    *,
    fee_bps: float,
    slippage_bps: float,
    sharpe: float | None,
) -> str:
    """Return the account part of the user message: returns, cash, positions as JSON, Sharpe."""
    lines = [
        "### HERE IS YOUR ACCOUNT INFORMATION & PERFORMANCE",
        f"Current Total Return (percent): {format_pct(account.total_return_pct)}",
        f"Available Cash: {format_usd(account.cash_usd)}",
        f"**Current Account Value:** {format_usd(account.equity_usd)}",
        f"Trading costs: taker fee {format_bps_as_pct(fee_bps)} of the notional on every fill "
        f"(entries and exits), slippage about {format_bps_as_pct(slippage_bps)} per fill.",
    ]
    positions = _ordered_positions(snapshot, account.positions)
    if positions:
        shown = "\n".join(_position_line(snapshot, position) for position in positions)
        lines.append(
            "Current live positions & performance (one JSON object per position):\n" + shown
        )
    else:
        lines.append("Current live positions & performance: none (no open position)")
    sharpe_text = format_sig(sharpe, 4)
    if sharpe_text == NOT_AVAILABLE:
        sharpe_text = "not available yet"
    lines.append(f"Sharpe Ratio: {sharpe_text}")
    return "\n\n".join(lines)


def render_preamble(snapshot: MarketSnapshot, *, started_at: datetime, invocation: int) -> str:
    """Return the opening lines: minutes since the start, the current time, the call count."""
    now = ensure_utc(snapshot.at)
    elapsed_s = (now - ensure_utc(started_at)).total_seconds()
    if elapsed_s < 0:
        raise ValueError(
            f"started_at {ensure_utc(started_at).isoformat()} is after the snapshot time "
            f"{now.isoformat()}: pass the time the agent started trading"
        )
    return (
        f"It has been {int(elapsed_s // 60)} minutes since you started trading. The current time "
        f"is {now:%Y-%m-%d %H:%M:%S} UTC and you have been invoked {invocation} times. Below, we "
        "are providing you with a variety of state data, price data, and predictive signals so "
        "you can discover alpha. Below that is your current account information, value, "
        "performance, positions, etc."
    )


def build_messages(
    snapshot: MarketSnapshot,
    account: AccountView,
    *,
    started_at: datetime,
    invocation: int,
    fee_bps: float,
    slippage_bps: float,
    max_leverage: int,
    max_position_margin_pct: float,
    sharpe: float | None,
    market_section: str | None = None,
) -> list[ChatMessage]:
    """Return the system and user messages for one agent's decision call.

    `invocation` is the number of this call (1 for the first); `started_at` is when the agent
    started trading; `max_position_margin_pct` is in percent of the account value; `sharpe` is
    None until there is enough history. Pass `market_section` (from `render_market_section` on
    the same snapshot) to reuse it across agents.
    """
    system = render_system_prompt(
        coins=tuple(snapshot.coins),
        fee_bps=fee_bps,
        slippage_bps=slippage_bps,
        max_leverage=max_leverage,
        max_position_margin_pct=max_position_margin_pct,
    )
    if market_section is None:
        market_section = render_market_section(snapshot)
    user = "\n\n".join(
        (
            render_preamble(snapshot, started_at=started_at, invocation=invocation),
            market_section,
            render_account_section(
                snapshot, account, fee_bps=fee_bps, slippage_bps=slippage_bps, sharpe=sharpe
            ),
        )
    )
    return [ChatMessage(role="system", content=system), ChatMessage(role="user", content=user)]


def _coin_block(snapshot: MarketSnapshot, coin: CoinSnapshot) -> str:
    name = coin.coin
    if isinstance(coin, PrecomputedCoinSnapshot):
        intraday = _TailColumns.of_rows(
            coin.intraday_rows, snapshot.intraday_timeframe, snapshot.at
        )
    else:
        intraday = _TailColumns(
            _closed_rows(coin.intraday, snapshot.intraday_timeframe, snapshot.at)
        )
    context = _context_tail(snapshot, coin)
    intraday_heading = describe_timeframe(snapshot.intraday_timeframe)
    headline = (
        f"current_price = {format_sig(coin.last_price, PRICE_DIGITS)}, "
        f"current_ema20 = {format_sig(intraday.last('ema20'), PRICE_DIGITS)}, "
        f"current_macd = {format_sig(intraday.last('macd'))}, "
        f"current_rsi (7 period) = {format_sig(intraday.last('rsi7'), 4)}"
    )
    lines = [
        f"### ALL {name} DATA",
        headline,
        f"In addition, here is the latest {name} open interest and funding rate for perps "
        "(the instrument you are trading):",
        _open_interest_line(coin),
        _funding_line(coin),
        f"**Intraday series ({intraday_heading} candles, oldest → latest):**",
        f"{name} close prices: {intraday.series('close', PRICE_DIGITS)}",
        f"EMA indicators (20-period): {intraday.series('ema20', PRICE_DIGITS)}",
        f"MACD indicators: {intraday.series('macd')}",
        f"RSI indicators (7-Period): {intraday.series('rsi7', 4)}",
        f"RSI indicators (14-Period): {intraday.series('rsi14', 4)}",
        _context_block(context, snapshot.context_timeframe),
    ]
    return "\n\n".join(lines)


def _context_tail(snapshot: MarketSnapshot, coin: CoinSnapshot) -> _TailColumns:
    if isinstance(coin, PrecomputedCoinSnapshot):
        return _TailColumns.of_rows(coin.context_rows, snapshot.context_timeframe, snapshot.at)
    return _TailColumns(_closed_rows(coin.context, snapshot.context_timeframe, snapshot.at))


# The context candles change every few hours, not every cycle: render them once per change.
_CONTEXT_MEMO: OrderedDict[tuple[str, bytes, tuple[str, ...]], str] = OrderedDict()
_CONTEXT_MEMO_SIZE: Final = 256


def _context_block(context: _TailColumns, timeframe: str) -> str:
    key = (timeframe, context.fingerprint(), context.column_names)
    found = _CONTEXT_MEMO.get(key)
    if found is not None:
        _CONTEXT_MEMO.move_to_end(key)
        return found
    text = "\n\n".join(
        (
            f"**Longer-term context ({describe_timeframe(timeframe)} timeframe):**",
            f"20-Period EMA: {format_sig(context.last('ema20'), PRICE_DIGITS)} vs. "
            f"50-Period EMA: {format_sig(context.last('ema50'), PRICE_DIGITS)}",
            f"3-Period ATR: {format_sig(context.last('atr3'))} vs. "
            f"14-Period ATR: {format_sig(context.last('atr14'))}",
            # The last closed candle, never the forming one (nof1 showed a tiny partial volume).
            f"Last closed candle volume: {format_sig(context.last('volume'))} vs. "
            f"Average Volume: {format_sig(context.last('volume_avg'))}",
            f"MACD indicators: {context.series('macd')}",
            f"RSI indicators (14-Period): {context.series('rsi14', 4)}",
        )
    )
    _CONTEXT_MEMO[key] = text
    if len(_CONTEXT_MEMO) > _CONTEXT_MEMO_SIZE:
        _CONTEXT_MEMO.popitem(last=False)
    return text


def _open_interest_line(coin: CoinSnapshot) -> str:
    latest = _optional(coin, _OPEN_INTEREST, coin.open_interest)
    if latest is None:
        return f"Open Interest: {NOT_AVAILABLE_TEXT}"
    average = _optional(coin, _OPEN_INTEREST_AVG, coin.open_interest_avg)
    average_text = NOT_AVAILABLE_TEXT if average is None else format_sig(average, PRICE_DIGITS)
    return f"Open Interest: Latest: {format_sig(latest, PRICE_DIGITS)}  Average: {average_text}"


def _funding_line(coin: CoinSnapshot) -> str:
    rate = _optional(coin, _FUNDING_RATE, coin.funding_rate)
    if rate is None:
        return f"Funding Rate: {NOT_AVAILABLE_TEXT}"
    return f"Funding Rate: {format_sig(rate)}"


def _optional(coin: CoinSnapshot, name: str, value: float | None) -> float | None:
    """Return the value, or None when the exchange did not give it (never a made-up zero)."""
    if value is None or name in coin.missing or not np.isfinite(value):
        return None
    return value


def _closed_rows(frame: pd.DataFrame, timeframe: str, at: datetime) -> pd.DataFrame:
    """Drop rows whose candle had not closed at `at`, in case a caller passed a forming one."""
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex) or len(index) == 0:
        return frame
    cutoff_ns = _open_cutoff_ns(timeframe, at)
    if cutoff_ns is None:
        return frame
    stamps = (index if index.unit == "ns" else index.as_unit("ns")).asi8
    if int(stamps[-1]) <= cutoff_ns:
        return frame  # the usual case: every row has closed
    closed = int(np.searchsorted(stamps, cutoff_ns, side="right"))
    return frame.iloc[:closed]


@functools.lru_cache(maxsize=256)
def _open_cutoff_ns(timeframe: str, at: datetime) -> int | None:
    """Return the latest open time (epoch ns) of a candle closed at `at` (None: no timeframe).

    A naive index holds UTC wall times, as `datetime_to_ns` reads a naive `at`: one cutoff
    serves both.
    """
    try:
        step = timeframe_to_timedelta(timeframe)
    except ValueError:
        return None
    return datetime_to_ns(ensure_utc(at) - step)


@functools.lru_cache(maxsize=16)
def _column_positions(columns: tuple[str, ...]) -> dict[str, int]:
    return {column: position for position, column in enumerate(columns)}


class _TailColumns:
    """The last `SERIES_LENGTH` closed rows of a frame as float arrays, one per column.

    One `to_numpy` per frame instead of a pandas column lookup per value: the market section is
    on the backtest's hot path. Built `of_rows` of a precomputed table, it reads the table's
    block directly and joins series from numbers formatted once per table row.
    """

    __slots__ = ("_columns", "_rows", "_start", "_table", "_values")

    def __init__(self, frame: pd.DataFrame) -> None:
        self._columns = _column_positions(tuple(map(str, frame.columns.tolist())))
        try:
            # A view, not a copy, when the frame is one float block (as the market data's are).
            values = frame.to_numpy(dtype=float)
        except (TypeError, ValueError):
            # A non-numeric column somewhere: convert column by column, unreadable ones as NaN.
            numeric = frame.apply(pd.to_numeric, errors="coerce")
            values = numeric.to_numpy(dtype=float, na_value=np.nan)
        self._values = values[-SERIES_LENGTH:]
        self._rows = self._values.shape[0]
        self._table: CandleTable | None = None
        self._start = 0

    @classmethod
    def of_rows(cls, rows: CandleRows, timeframe: str, at: datetime) -> _TailColumns:
        """Return the tail of the frame `rows` stand for (as `_closed_rows` would cut it)."""
        table = rows.table
        end = rows.end
        cutoff_ns = _open_cutoff_ns(timeframe, at)
        if end > rows.start and cutoff_ns is not None and int(table.open_ns[end - 1]) > cutoff_ns:
            opens = table.open_ns[rows.start : end]
            end = rows.start + int(np.searchsorted(opens, cutoff_ns, side="right"))
        start = max(rows.start, end - SERIES_LENGTH)
        tail = cls.__new__(cls)
        tail._columns = table.positions
        tail._values = table.values[start:end]
        tail._rows = max(0, end - start)
        tail._table = table
        tail._start = start
        return tail

    @property
    def column_names(self) -> tuple[str, ...]:
        """Return the column names, in order."""
        return tuple(self._columns)

    def fingerprint(self) -> bytes:
        """Return the exact bytes of the values: equal bytes render the same text."""
        return self._values.tobytes()

    def values(self, column: str) -> np.ndarray:
        position = self._columns.get(column)
        if position is None:
            return np.full(self._rows, np.nan)
        return self._values[:, position]

    def last(self, column: str) -> float | None:
        return float(self.values(column)[-1]) if self._rows else None

    def series(self, column: str, digits: int = INDICATOR_DIGITS) -> str:
        if self._rows == 0:
            return NOT_AVAILABLE_TEXT
        if self._table is not None and column in self._columns:
            texts = _table_texts(self._table, column, digits)
            start, end = self._start, self._start + self._rows
            shown = texts[start:end]
            if None in shown:
                column_values = self._table.values[:, self._columns[column]]
                for row in range(start, end):
                    if texts[row] is None:
                        texts[row] = format_sig(float(column_values[row]), digits)
                shown = texts[start:end]
            return "[" + ", ".join(shown) + "]"  # type: ignore[arg-type]
        return format_series(self.values(column).tolist(), digits)


# Each row of a precomputed table is in ten series, one more each cycle: format each value once.
_TABLE_TEXTS: weakref.WeakKeyDictionary[CandleTable, dict[tuple[str, int], list[str | None]]] = (
    weakref.WeakKeyDictionary()
)


def _table_texts(table: CandleTable, column: str, digits: int) -> list[str | None]:
    """Return the texts of `column` by `digits` for every row of `table`, None where not yet."""
    by_column = _TABLE_TEXTS.get(table)
    if by_column is None:
        by_column = _TABLE_TEXTS[table] = {}
    key = (column, digits)
    texts = by_column.get(key)
    if texts is None:
        texts = by_column[key] = [None] * table.values.shape[0]
    return texts


def _ordered_positions(
    snapshot: MarketSnapshot, positions: Mapping[str, Position]
) -> list[Position]:
    """Return positions in the snapshot's coin order, then any other coin by name."""
    order = {coin: rank for rank, coin in enumerate(snapshot.coins)}
    return sorted(positions.values(), key=lambda pos: (order.get(pos.coin, len(order)), pos.coin))


def _position_line(snapshot: MarketSnapshot, position: Position) -> str:
    """Return one position as a line of JSON: what moves with the price filled into its template."""
    coin = snapshot.coins.get(position.coin)
    price = coin.last_price if coin is not None else None
    held = ensure_utc(snapshot.at) - ensure_utc(position.opened_at)
    moving = (
        json_number(price, PRICE_DIGITS),
        "null" if price is None else json_usd(position.unrealized_pnl_usd(price)),
        "null" if price is None else json_usd(position.notional_usd(price)),
        to_json(format_duration(held)),
    )
    pieces = _position_template(position)
    return "".join(piece for pair in zip(pieces, (*moving, ""), strict=True) for piece in pair)


# Marks the slots of the values that move with the price; JSON escapes it in any real string.
_SLOT: Final = RawJson("\x00")


# A position stays the same object for many cycles while only its price moves: the rest of its
# JSON is rendered once.
@functools.lru_cache(maxsize=256)
def _position_template(position: Position) -> tuple[str, ...]:
    plan = position.exit_plan
    document: dict[str, JsonValue] = {
        "coin": position.coin,
        "side": position.side,
        "quantity": json_number(position.quantity, QUANTITY_DIGITS),
        "entry_price": json_number(position.entry_price, PRICE_DIGITS),
        "current_price": _SLOT,
        "liquidation_price": json_number(position.liquidation_price, PRICE_DIGITS),
        "unrealized_pnl_usd": _SLOT,
        "leverage": position.leverage,
        "margin_usd": json_usd(position.margin_usd),
        "notional_usd": _SLOT,
        "exit_plan": {
            "profit_target": json_number(plan.profit_target, PRICE_DIGITS),
            "stop_loss": json_number(plan.stop_loss, PRICE_DIGITS),
            "invalidation_condition": plan.invalidation_condition,
        },
        "confidence": json_number(position.confidence, 4),
        "risk_usd": json_usd(position.risk_usd),
        "funding_paid_usd": json_usd(position.funding_usd),
        "justification": position.justification,
        "opened_at": f"{ensure_utc(position.opened_at):%Y-%m-%d %H:%M UTC}",
        "held_for": _SLOT,
    }
    return tuple(to_json(document).split(_SLOT))
