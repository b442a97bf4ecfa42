"""`HistoricalMarketData`: the `MarketData` port over candle files, for backtests.

Everything expensive happens once, in the constructor: the base candles are resampled to the
intraday and context timeframes on clock boundaries, the indicators are computed over the whole
history, and the candle close times are kept as int64 nanosecond arrays. `snapshot(at)` then only
binary-searches those arrays and hands out the last `tail` rows as positions in them
(`CandleRows`: the frame is sliced only if someone reads it), which is why a backtest can take
thousands of snapshots a second. A resampled candle is visible only once all of it has closed
(`open_time + timeframe <= at`), and indicators on a candle only read that candle and earlier
ones, so nothing from after `at` leaks into a snapshot.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import numpy as np
import pandas as pd

from app.domain import (
    CANDLE_COLUMNS,
    Bars,
    CandleRows,
    CandleTable,
    MarketRules,
    MarketSnapshot,
    PrecomputedCoinSnapshot,
    Settlements,
    datetime_to_ns,
    ensure_utc,
    index_ns,
    ns_to_datetime,
)
from app.errors import ConfigError, DataUnavailableError
from app.indicators import (
    CONTEXT_INDICATOR_COLUMNS,
    INTRADAY_INDICATOR_COLUMNS,
    add_context_indicators,
    add_intraday_indicators,
)
from app.market.dataset import DataSet
from app.market.files import FUNDING_INDEX_NAME, infer_timeframe
from app.market.resample import check_multiple, resample_candles, step_ns

log = logging.getLogger(__name__)

DEFAULT_TAIL: Final = 60
# Files carry no open interest; the prompt says "not available" for these.
ALWAYS_MISSING: Final = frozenset({"open_interest", "open_interest_avg"})


# A backtest converts the same few cycle times for every coin and agent: remember them.
@functools.lru_cache(maxsize=4096)
def _ns(moment: datetime) -> int:
    return datetime_to_ns(moment)


@functools.lru_cache(maxsize=4096)
def _to_datetime(ns: int) -> datetime:
    return ns_to_datetime(ns)


def _ready_close_ns(
    frame: pd.DataFrame, close_ns: np.ndarray, columns: Sequence[str]
) -> int | None:
    complete = frame[list(columns)].notna().all(axis=1).to_numpy()
    hits = np.flatnonzero(complete)
    return int(close_ns[hits[0]]) if hits.size else None


class _Window:
    """One timeframe of one coin: the table, its close times, and the last rows handed out."""

    __slots__ = ("close_ns", "last_key", "last_rows", "table")

    def __init__(self, frame: pd.DataFrame, step: int) -> None:
        # Plain Python names for the labels: every slice gets its own copy of the column index,
        # and the prompt reads the names of thousands of slices; pandas' string labels are
        # twenty times slower to list.
        labels = pd.Index(list(frame.columns), dtype=object)
        self.table = CandleTable(frame.set_axis(labels, axis=1))
        self.close_ns: np.ndarray = self.table.open_ns + step
        self.last_key: tuple[int, int] = (-1, -1)
        self.last_rows: CandleRows = self.table.rows(0, 0)

    @property
    def frame(self) -> pd.DataFrame:
        return self.table.frame

    def closed_tail(self, at_ns: int, tail: int) -> CandleRows:
        end = int(self.close_ns.searchsorted(at_ns, side="right"))
        key = (max(0, end - tail), end)
        # The context rows only change every few hours; reuse them (and the frame they may have
        # built) instead of handing out new ones.
        if key != self.last_key:
            self.last_rows = self.table.rows(*key)
            self.last_key = key
        return self.last_rows


@dataclass(frozen=True, slots=True)
class _Funding:
    settled_ns: np.ndarray
    rates: np.ndarray
    series: pd.Series


class _CoinHistory:
    """Everything precomputed for one coin."""

    def __init__(
        self,
        *,
        coin: str,
        symbol: str,
        base: pd.DataFrame,
        base_timeframe: str,
        intraday_timeframe: str,
        context_timeframe: str,
        funding: pd.Series | None,
        marks: pd.DataFrame | None,
        rules: MarketRules | None,
    ) -> None:
        self.coin = coin
        self.symbol = symbol
        self.rules = rules
        self.base = base[list(CANDLE_COLUMNS)]
        self.base_step = step_ns(base_timeframe)
        self.base_open_ns: np.ndarray = index_ns(base)
        self.base_close_ns = self.base_open_ns + self.base_step
        self.base_open = base["open"].to_numpy(dtype=float)
        self.base_high = base["high"].to_numpy(dtype=float)
        self.base_low = base["low"].to_numpy(dtype=float)
        self.base_close = base["close"].to_numpy(dtype=float)
        intraday = add_intraday_indicators(
            resample_candles(self.base, intraday_timeframe, base_timeframe)
        )
        context = add_context_indicators(
            resample_candles(self.base, context_timeframe, base_timeframe)
        )
        self.intraday = _Window(_one_block(intraday), step_ns(intraday_timeframe))
        self.context = _Window(_one_block(context), step_ns(context_timeframe))
        self.funding = self._funding(funding)
        self.marks = marks
        if marks is not None and len(marks):
            mark_timeframe = infer_timeframe(marks) or base_timeframe
            self.mark_open_ns: np.ndarray = index_ns(marks)
            self.mark_close_ns: np.ndarray = self.mark_open_ns + step_ns(mark_timeframe)
            self.mark_open = marks["open"].to_numpy(dtype=float)
            self.mark_close = marks["close"].to_numpy(dtype=float)
        self.missing_always = (
            ALWAYS_MISSING
            | (frozenset() if self.funding else frozenset({"funding_rate", "next_funding_at"}))
            | (
                frozenset()
                if self.marks is not None and len(self.marks)
                else frozenset({"mark_price"})
            )
        )

    @staticmethod
    def _funding(series: pd.Series | None) -> _Funding | None:
        if series is None or series.empty:
            return None
        series = series.sort_index()
        return _Funding(index_ns(series), series.to_numpy(dtype=float), series)

    def ready_ns(self) -> int | None:
        intraday = _ready_close_ns(
            self.intraday.frame, self.intraday.close_ns, INTRADAY_INDICATOR_COLUMNS
        )
        context = _ready_close_ns(
            self.context.frame, self.context.close_ns, CONTEXT_INDICATOR_COLUMNS
        )
        if intraday is None or context is None:
            return None
        return max(intraday, context)

    def last_close_index(self, at_ns: int) -> int:
        return int(self.base_close_ns.searchsorted(at_ns, side="right")) - 1

    def mark_at(self, at_ns: int) -> float | None:
        if self.marks is None or not len(self.marks):
            return None
        i = int(self.mark_close_ns.searchsorted(at_ns, side="right")) - 1
        return float(self.mark_close[i]) if i >= 0 else None

    def snapshot(self, at_ns: int, tail: int) -> PrecomputedCoinSnapshot:
        i = self.last_close_index(at_ns)
        if i < 0:
            raise DataUnavailableError(
                f"no {self.coin} candle has closed by {_to_datetime(at_ns)}; "
                f"the data starts at {_to_datetime(int(self.base_open_ns[0]))}"
            )
        missing = self.missing_always
        funding_rate: float | None = None
        next_funding_at: datetime | None = None
        if self.funding is not None:
            k = int(self.funding.settled_ns.searchsorted(at_ns, side="right"))
            if k > 0:
                funding_rate = float(self.funding.rates[k - 1])
            else:
                missing = missing | {"funding_rate"}
            if k < self.funding.settled_ns.shape[0]:
                next_funding_at = _to_datetime(int(self.funding.settled_ns[k]))
            else:
                missing = missing | {"next_funding_at"}
        mark_price = self.mark_at(at_ns)
        if mark_price is None and "mark_price" not in missing:
            missing = missing | {"mark_price"}
        return PrecomputedCoinSnapshot(
            coin=self.coin,
            symbol=self.symbol,
            last_price=float(self.base_close[i]),
            intraday_rows=self.intraday.closed_tail(at_ns, tail),
            context_rows=self.context.closed_tail(at_ns, tail),
            funding_rate=funding_rate,
            next_funding_at=next_funding_at,
            mark_price=mark_price,
            missing=frozenset(missing),
            rules=self.rules,
        )


class HistoricalMarketData:
    """Serve `MarketSnapshot`s from candle history at any `at`, without look-ahead.

    `candles` maps each coin to its base-timeframe OHLCV frame (as `load_candles` returns it);
    `funding` to its settled rates (`load_funding`) and `marks` to mark-price candles, both
    optional. The snapshot's `funding_rate` is the most recently *settled* rate and
    `next_funding_at` the next settlement in the data; open interest is never in files, so it
    is reported missing. `tail` is how many closed candles per timeframe a snapshot carries.
    """

    def __init__(
        self,
        candles: Mapping[str, pd.DataFrame],
        *,
        base_timeframe: str | None = None,
        intraday_timeframe: str = "3m",
        context_timeframe: str = "4h",
        funding: Mapping[str, pd.Series] | None = None,
        marks: Mapping[str, pd.DataFrame] | None = None,
        tail: int = DEFAULT_TAIL,
        quote: str = "USDT",
        symbols: Mapping[str, str] | None = None,
        rules: Mapping[str, MarketRules] | None = None,
    ) -> None:
        if not candles:
            raise ConfigError("no candles given: pass at least one coin's candle file")
        if tail < 1:
            raise ConfigError(f"tail must be at least 1 candle, got {tail}")
        empty = [coin for coin, frame in candles.items() if frame.empty]
        if empty:
            raise ConfigError(f"no candles for {', '.join(empty)}")
        if base_timeframe is None:
            base_timeframe = self._infer_base(candles)
        check_multiple(intraday_timeframe, base_timeframe, what="intraday")
        check_multiple(context_timeframe, base_timeframe, what="context")
        self.base_timeframe = base_timeframe
        self.intraday_timeframe = intraday_timeframe
        self.context_timeframe = context_timeframe
        self.tail = tail
        self._intraday_step = step_ns(intraday_timeframe)
        funding = funding or {}
        marks = marks or {}
        rules = rules or {}
        symbols = symbols or {}
        self._coins: dict[str, _CoinHistory] = {
            coin: _CoinHistory(
                coin=coin,
                symbol=symbols.get(coin, f"{coin}/{quote}:{quote}"),
                base=frame,
                base_timeframe=base_timeframe,
                intraday_timeframe=intraday_timeframe,
                context_timeframe=context_timeframe,
                funding=funding.get(coin),
                marks=marks.get(coin),
                rules=rules.get(coin),
            )
            for coin, frame in candles.items()
        }
        self._end_ns = min(int(c.base_close_ns[-1]) for c in self._coins.values())

    @staticmethod
    def _infer_base(candles: Mapping[str, pd.DataFrame]) -> str:
        found = {coin: infer_timeframe(frame) for coin, frame in candles.items()}
        steps = {tf for tf in found.values() if tf is not None}
        if len(steps) != 1:
            raise ConfigError(
                "cannot tell the candles' timeframe "
                f"({', '.join(f'{c}: {tf}' for c, tf in found.items())}); "
                "give files of one timeframe for every coin"
            )
        return steps.pop()

    @classmethod
    def from_data_set(cls, data: DataSet, **options: object) -> HistoricalMarketData:
        """Build from a loaded `DataSet` (candles, funding and marks per coin)."""
        return cls(
            data.candles,
            base_timeframe=data.timeframe,
            funding=data.funding,
            marks=data.marks,
            **options,  # type: ignore[arg-type]
        )

    @property
    def coins(self) -> tuple[str, ...]:
        """Return the coins, in the order they were given."""
        return tuple(self._coins)

    @property
    def start_at(self) -> datetime:
        """Return the earliest base candle open time over all coins."""
        return _to_datetime(min(int(c.base_open_ns[0]) for c in self._coins.values()))

    @property
    def end_at(self) -> datetime:
        """Return the time the last base candle closes, for the coin whose data ends first."""
        return _to_datetime(self._end_ns)

    def first_ready_at(self) -> datetime:
        """Return the first time at which every coin's newest closed candles have all indicators.

        That is the close of the 50th context candle for EMA50 (about 8 days of 4h candles) or
        later; raise `ConfigError` when the data is too short for it.
        """
        ready: list[int] = []
        for coin, history in self._coins.items():
            at = history.ready_ns()
            if at is None:
                raise ConfigError(
                    f"{coin}: the data is too short to warm up the indicators (EMA50 needs 50 "
                    f"{self.context_timeframe} candles); give a longer history"
                )
            ready.append(at)
        return _to_datetime(max(ready))

    def snapshot_at(self, at: datetime) -> MarketSnapshot:
        """Return the market as it was known at `at` (synchronous; `snapshot` is the port's)."""
        at = ensure_utc(at)
        at_ns = _ns(at)
        if at_ns > self._end_ns + self._intraday_step:
            raise DataUnavailableError(
                f"the data ends at {self.end_at}; there is no market at {at}"
            )
        coins = {coin: history.snapshot(at_ns, self.tail) for coin, history in self._coins.items()}
        return MarketSnapshot(
            at=at,
            intraday_timeframe=self.intraday_timeframe,
            context_timeframe=self.context_timeframe,
            coins=coins,
        )

    def _history(self, coin: str) -> _CoinHistory:
        try:
            return self._coins[coin]
        except KeyError:
            raise ConfigError(
                f"no data for {coin}; the data has {', '.join(self._coins)}"
            ) from None

    def candles_between(self, coin: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Return the base candles of `coin` opened at or after `start` and closed by `end`."""
        history = self._history(coin)
        lo = int(history.base_open_ns.searchsorted(_ns(start), side="left"))
        hi = int(history.base_close_ns.searchsorted(_ns(end), side="right"))
        return history.base.iloc[lo : max(lo, hi)]

    def price_at(self, coin: str, at: datetime) -> float | None:
        """Return the close of the last base candle closed by `at`, or None before the data."""
        history = self._history(coin)
        i = history.last_close_index(_ns(at))
        return float(history.base_close[i]) if i >= 0 else None

    def next_open(self, coin: str, at: datetime) -> tuple[datetime, float] | None:
        """Return (open time, open price) of the first base candle opening at or after `at`."""
        history = self._history(coin)
        i = int(history.base_open_ns.searchsorted(_ns(at), side="left"))
        if i >= history.base_open_ns.shape[0]:
            return None
        return _to_datetime(int(history.base_open_ns[i])), float(history.base_open[i])

    def funding_between(self, coin: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Return the settlements in (`start`, `end`]: `funding_rate` and the `mark_price` then.

        The mark price is the open of the mark candle starting at the settlement (what freqtrade
        charges); NaN without mark data for that time, and the paper exchange then uses the
        candle price (the port's contract).
        """
        history = self._history(coin)
        if history.funding is None:
            return pd.DataFrame(
                {"funding_rate": [], "mark_price": []},
                index=pd.DatetimeIndex([], tz="UTC", name=FUNDING_INDEX_NAME),
            )
        lo = int(history.funding.settled_ns.searchsorted(_ns(start), side="right"))
        hi = int(history.funding.settled_ns.searchsorted(_ns(end), side="right"))
        times = history.funding.settled_ns[lo:hi]
        marks = np.full(times.shape[0], np.nan)
        if history.marks is not None and len(history.marks):
            marks = _open_at(history.mark_open_ns, history.mark_open, times)
        return pd.DataFrame(
            {"funding_rate": history.funding.rates[lo:hi], "mark_price": marks},
            index=history.funding.series.index[lo:hi],
        )

    # The array fast path of the exit monitor (the `BarSource` port): views, no copies.

    def bars_between(self, coin: str, start: datetime, end: datetime) -> Bars:
        """Return the base candles of `coin` with open time in [`start`, `end`) as arrays."""
        history = self._history(coin)
        lo = int(history.base_open_ns.searchsorted(_ns(start), side="left"))
        hi = int(history.base_open_ns.searchsorted(_ns(end), side="left"))
        return Bars(
            open_ns=history.base_open_ns[lo:hi],
            open=history.base_open[lo:hi],
            high=history.base_high[lo:hi],
            low=history.base_low[lo:hi],
            close=history.base_close[lo:hi],
        )

    def settlements_between(self, coin: str, start: datetime, end: datetime) -> Settlements:
        """Return the funding settlements of `coin` in (`start`, `end`] as arrays."""
        history = self._history(coin)
        funding = history.funding
        if funding is None:
            return _NO_SETTLEMENTS
        lo = int(funding.settled_ns.searchsorted(_ns(start), side="right"))
        hi = int(funding.settled_ns.searchsorted(_ns(end), side="right"))
        if lo == hi:
            return _NO_SETTLEMENTS
        times = funding.settled_ns[lo:hi]
        marks = np.full(times.shape[0], np.nan)
        if history.marks is not None and len(history.marks):
            marks = _open_at(history.mark_open_ns, history.mark_open, times)
        fallback = _open_at(history.base_open_ns, history.base_open, times)
        return Settlements(
            settled_ns=times,
            rates=funding.rates[lo:hi],
            marks=np.where(np.isnan(marks), fallback, marks),
        )

    # The MarketData port (async, as the live feed needs it).

    async def snapshot(self, at: datetime) -> MarketSnapshot:
        """Return the market as it was known at `at`."""
        return self.snapshot_at(at)

    async def candles(
        self, coin: str, timeframe: str, start: datetime, end: datetime
    ) -> pd.DataFrame:
        """Return `coin`'s OHLCV at `timeframe`, opened at or after `start` and closed by `end`."""
        base = self.candles_between(coin, start, end)
        if timeframe == self.base_timeframe:
            return base
        return resample_candles(base, timeframe, self.base_timeframe)

    async def funding(self, coin: str, start: datetime, end: datetime) -> pd.DataFrame:
        """Return the settlements in (`start`, `end`] with `funding_rate` and `mark_price`."""
        return self.funding_between(coin, start, end)

    async def market_rules(self) -> Mapping[str, MarketRules]:
        """Return the rules given at construction, or rules without limits per coin."""
        return {
            coin: history.rules or MarketRules(symbol=history.symbol)
            for coin, history in self._coins.items()
        }

    async def close(self) -> None:
        """Nothing to release."""


def _one_block(frame: pd.DataFrame) -> pd.DataFrame:
    """Return `frame` as one float64 block: every snapshot slice then reads as a numpy view."""
    return pd.DataFrame(
        frame.to_numpy(dtype=np.float64), index=frame.index, columns=frame.columns, copy=False
    )


def _open_at(open_ns: np.ndarray, opens: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Return the open of the candle starting exactly at each of `times` (NaN where none does)."""
    out = np.full(times.shape[0], np.nan)
    if times.shape[0] == 0 or open_ns.shape[0] == 0:
        return out
    idx = open_ns.searchsorted(times, side="left")
    inside = idx < open_ns.shape[0]
    exact = np.zeros(times.shape[0], dtype=bool)
    exact[inside] = open_ns[idx[inside]] == times[inside]
    out[exact] = opens[idx[exact]]
    return out


_NO_SETTLEMENTS: Final = Settlements(
    settled_ns=np.empty(0, dtype=np.int64),
    rates=np.empty(0, dtype=np.float64),
    marks=np.empty(0, dtype=np.float64),
)
