"""What a chart image shows, as data: a `ChartSpec` per image and the key that names it.

Planning is cheap and pure (numpy and pandas, no drawing, no clock): it picks the closed candles,
the EMAs and the position levels each panel draws, and hashes them into `ChartSpec.key`. The
renderer (`app.charts.render`) turns a spec into PNG bytes; the same spec always gives the same
bytes. A replay can therefore name the images of a call by their keys without drawing them.

The layout (see docs/prompt.md, "What a vision agent sees"): one image per timeframe, each a grid
of up to six coins. The intraday image carries the agent's open positions (entry, stop and
target lines); the 4h context image carries none, so it is the same for every agent and stays
the same until the next 4h candle closes.
"""

from __future__ import annotations

import functools
import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from app.domain import (
    MarketSnapshot,
    Position,
    PositionSide,
    datetime_to_ns,
    ns_to_datetime,
    timeframe_to_timedelta,
)

# Names what the renderer draws and how. Bump it with any change that alters the pixels, so a
# stored image and a cache key never stand for two different pictures.
CHART_VERSION: Final = "c1"

# Candles per panel: the snapshot's window (60 closed candles live and in backtests).
MAX_CANDLES: Final = 60
# Coins per image; more coins make more images of the same timeframe.
MAX_COINS_PER_IMAGE: Final = 6
# Columns of `Panel.values`.
VALUE_COLUMNS: Final[tuple[str, ...]] = (
    "open",
    "high",
    "low",
    "close",
    "volume",
    "ema20",
    "ema50",
)
# Qwen-VL resizes images to multiples of 28 (Qwen2.5-VL) or 32 (Qwen3-VL) pixels; sizes that
# are multiples of 32 reach Qwen3-VL unscaled.
SIZE_STEP_PX: Final = 32
MIN_SIDE_PX: Final = 256


@dataclass(frozen=True, slots=True)
class ChartLimits:
    """Size limits for the images of one request (the `[vision]` settings).

    `max_width_px`/`max_height_px` cap each image (it is scaled down, keeping its shape, to fit);
    `max_image_bytes` is checked after rendering; `max_images` keeps the first images (intraday
    before context). The defaults leave the layout's own size (896 x 800 for six coins) as it is
    and stay far below the providers' limits.
    """

    max_width_px: int = 1024
    max_height_px: int = 1024
    max_image_bytes: int = 1_000_000
    max_images: int = 4

    def __post_init__(self) -> None:
        if min(self.max_width_px, self.max_height_px) < MIN_SIDE_PX:
            raise ValueError(f"image sides must be at least {MIN_SIDE_PX} px")
        if self.max_image_bytes < 10_000:
            raise ValueError("max_image_bytes must be at least 10000")
        if self.max_images < 1:
            raise ValueError("max_images must be at least 1")


@dataclass(frozen=True, slots=True)
class PositionMarks:
    """The levels of one open position a chart draws: entry, stop and target."""

    side: PositionSide
    entry_price: float
    stop_loss: float | None = None
    profit_target: float | None = None

    @classmethod
    def from_position(cls, position: Position) -> PositionMarks:
        """Return the marks of an open position."""
        return cls(
            side=position.side,
            entry_price=float(position.entry_price),
            stop_loss=_finite_or_none(position.exit_plan.stop_loss),
            profit_target=_finite_or_none(position.exit_plan.profit_target),
        )

    def levels(self) -> tuple[tuple[str, float], ...]:
        """Return `(name, price)` for entry, stop and target, the known ones."""
        found = [("entry", self.entry_price)]
        if self.stop_loss is not None:
            found.append(("stop", self.stop_loss))
        if self.profit_target is not None:
            found.append(("target", self.profit_target))
        return tuple(found)

    def canonical(self) -> str:
        """Return a stable text form (for the key): floats by `repr`, which round-trips."""
        return f"{self.side}|{self.entry_price!r}|{self.stop_loss!r}|{self.profit_target!r}"


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


@dataclass(frozen=True, slots=True, eq=False)
class Panel:
    """One coin's candles on one timeframe: open times (UTC epoch ns) and `VALUE_COLUMNS`."""

    coin: str
    timeframe: str
    open_ns: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    marks: PositionMarks | None = None

    def __len__(self) -> int:
        return int(self.open_ns.shape[0])

    def column(self, name: str) -> npt.NDArray[np.float64]:
        """Return one of `VALUE_COLUMNS` as an array."""
        return self.values[:, VALUE_COLUMNS.index(name)]

    def time_range(self) -> tuple[datetime, datetime] | None:
        """Return the first candle's open and the last candle's close (UTC)."""
        if not len(self):
            return None
        step = timeframe_to_timedelta(self.timeframe)
        return ns_to_datetime(int(self.open_ns[0])), ns_to_datetime(int(self.open_ns[-1])) + step


@dataclass(frozen=True, slots=True, eq=False)
class ChartSpec:
    """Everything one image shows: panels in a grid of `rows` x `columns`, and its size.

    `kind` says what it is ("intraday", "context"); `key` is the sha256 of all of it, with
    `CHART_VERSION`.
    """

    kind: str
    panels: tuple[Panel, ...]
    rows: int
    columns: int
    width_px: int
    height_px: int
    version: str = CHART_VERSION
    key: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if len(self.panels) > self.rows * self.columns:
            raise ValueError(f"{len(self.panels)} panels do not fit {self.rows}x{self.columns}")
        object.__setattr__(self, "key", _spec_key(self))

    @property
    def coins(self) -> tuple[str, ...]:
        """Return the coins drawn, in order, each once."""
        return tuple(dict.fromkeys(panel.coin for panel in self.panels))

    @property
    def timeframes(self) -> tuple[str, ...]:
        """Return the timeframes drawn, in order, each once."""
        return tuple(dict.fromkeys(panel.timeframe for panel in self.panels))

    @property
    def has_positions(self) -> bool:
        """Return True when a panel draws an open position's levels."""
        return any(panel.marks is not None for panel in self.panels)

    @property
    def heading(self) -> str:
        """Return what the image shows in time: each timeframe's candle count and UTC range."""
        parts = []
        for timeframe in self.timeframes:
            panels = [p for p in self.panels if p.timeframe == timeframe and len(p)]
            ranges = [r for r in (p.time_range() for p in panels) if r is not None]
            if not ranges:
                parts.append(f"{timeframe} candles (none closed yet)")
                continue
            start = min(r[0] for r in ranges)
            end = max(r[1] for r in ranges)
            count = max(len(p) for p in panels)
            parts.append(f"{timeframe} candles (last {count} closed, {_format_range(start, end)})")
        return " and ".join(parts)

    @property
    def caption(self) -> str:
        """Return a one-line description: coins, timeframes, time ranges (UTC), what is drawn."""
        with_positions = "; open positions marked" if self.has_positions else ""
        return (
            f"{', '.join(self.coins)}: {self.heading}, with EMA20, EMA50 and volume{with_positions}"
        )


def _format_range(start: datetime, end: datetime) -> str:
    if start.date() == end.date():
        return f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


def _spec_key(spec: ChartSpec) -> str:
    digest = hashlib.sha256()
    head = f"{spec.version}|{spec.kind}|{spec.rows}x{spec.columns}|{spec.width_px}x{spec.height_px}"
    digest.update(head.encode())
    for panel in spec.panels:
        marks = panel.marks.canonical() if panel.marks is not None else "-"
        digest.update(f"|{panel.coin}|{panel.timeframe}|{len(panel)}|{marks}|".encode())
        digest.update(np.ascontiguousarray(panel.open_ns, dtype="<i8").tobytes())
        # One NaN bit pattern, so NaNs from different sources hash alike.
        values = np.where(np.isnan(panel.values), np.nan, panel.values)
        digest.update(np.ascontiguousarray(values, dtype="<f8").tobytes())
    return digest.hexdigest()


class _FrameArrays:
    """The candle frames of recent snapshots as arrays, by frame identity.

    A backtest hands out the same context frame for every cycle of a 4h candle; converting it
    once instead of every cycle keeps planning near a millisecond. Each entry keeps its frame
    alive, so an id is never reused while it is in here. Snapshot frames are never changed in
    place; a frame that were would not be read again.
    """

    def __init__(self, size: int = 64) -> None:
        self._entries: OrderedDict[int, tuple[pd.DataFrame, np.ndarray, np.ndarray]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, frame: pd.DataFrame) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        key = id(frame)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] is frame:
                self._entries.move_to_end(key)
                return entry[1], entry[2]
        open_ns, values = _frame_to_arrays(frame)
        with self._lock:
            self._entries[key] = (frame, open_ns, values)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return open_ns, values


_UNIT_NS: Final = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def _frame_to_arrays(frame: pd.DataFrame) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    index = frame.index
    if not isinstance(index, pd.DatetimeIndex):
        raise ValueError("candles must be indexed by their UTC open time (a DatetimeIndex)")
    # `asi8` counts from the UTC epoch whatever the index's time zone; naive means UTC.
    open_ns = np.asarray(index.asi8, dtype=np.int64) * _UNIT_NS[str(index.unit)]
    values = np.full((len(frame), len(VALUE_COLUMNS)), np.nan)
    positions = {name: i for i, name in enumerate(frame.columns.tolist())}
    targets = [i for i, name in enumerate(VALUE_COLUMNS) if name in positions]
    if targets and len(frame):
        # One conversion of the whole (single-block) frame beats one per column by far.
        block = frame.to_numpy(dtype=np.float64, na_value=np.nan)
        values[:, targets] = block[:, [positions[VALUE_COLUMNS[i]] for i in targets]]
    open_ns.setflags(write=False)
    values.setflags(write=False)
    return open_ns, values


_frame_arrays: Final = _FrameArrays()


def panel_from_frame(
    coin: str,
    frame: pd.DataFrame,
    *,
    timeframe: str,
    at: datetime,
    marks: PositionMarks | None = None,
    max_candles: int = MAX_CANDLES,
) -> Panel:
    """Return the last `max_candles` candles of `frame` that closed by `at`.

    Snapshot frames hold only closed candles already; a row whose candle closes after `at` is
    dropped anyway, so nothing later than `at` can reach an image. A missing EMA column is NaN
    (the line is not drawn).
    """
    open_ns, values = _frame_arrays.get(frame)
    closed = int(np.searchsorted(open_ns + _step_ns(timeframe), datetime_to_ns(at), "right"))
    start = max(0, closed - max_candles)
    return Panel(
        coin=coin,
        timeframe=timeframe,
        open_ns=open_ns[start:closed],
        values=values[start:closed],
        marks=marks,
    )


@functools.lru_cache(maxsize=64)
def _step_ns(timeframe: str) -> int:
    return int(timeframe_to_timedelta(timeframe) / timedelta(microseconds=1)) * 1000


def fit_size(width_px: int, height_px: int, limits: ChartLimits) -> tuple[int, int]:
    """Return the image size: the layout's size scaled down to fit the limits, shape kept,
    each side a multiple of `SIZE_STEP_PX` (and at least `MIN_SIDE_PX`)."""
    scale = min(1.0, limits.max_width_px / width_px, limits.max_height_px / height_px)

    def side(pixels: int) -> int:
        stepped = int(pixels * scale) // SIZE_STEP_PX * SIZE_STEP_PX
        return max(MIN_SIDE_PX, stepped)

    return side(width_px), side(height_px)


# The layout's size: two columns of coins from two coins on, each panel about 440 x 250 pixels
# (60 candles of 7 pixels), under a 42-pixel header; sides rounded up to `SIZE_STEP_PX`.
COLUMN_WIDTH_PX: Final = 448
ROW_HEIGHT_PX: Final = 252
HEADER_HEIGHT_PX: Final = 42


def grid_shape(coins: int) -> tuple[int, int]:
    """Return (rows, columns) of the coin grid of one image."""
    if coins <= 1:
        return 1, 1
    return -(-coins // 2), 2


def design_size(coins: int) -> tuple[int, int]:
    """Return the layout's own size in pixels for an image of `coins` coins (896 x 800 for 6)."""
    rows, columns = grid_shape(max(1, min(coins, MAX_COINS_PER_IMAGE)))
    height = HEADER_HEIGHT_PX + rows * ROW_HEIGHT_PX
    return columns * COLUMN_WIDTH_PX, -(-height // SIZE_STEP_PX) * SIZE_STEP_PX


def plan_market_charts(
    snapshot: MarketSnapshot,
    positions: Mapping[str, Position] | None = None,
    limits: ChartLimits | None = None,
    *,
    coins: Sequence[str] | None = None,
) -> tuple[ChartSpec, ...]:
    """Return the specs of the images a vision agent gets for `snapshot`.

    Intraday images first (with the levels of `positions`, an agent's open positions by coin),
    then the 4h context images (the same for every agent), at most `limits.max_images`.
    """
    limits = limits or ChartLimits()
    chosen = [coin for coin in (coins or tuple(snapshot.coins)) if coin in snapshot.coins]
    positions = positions or {}
    specs: list[ChartSpec] = []
    for kind in ("intraday", "context"):
        timeframe = (
            snapshot.intraday_timeframe if kind == "intraday" else snapshot.context_timeframe
        )
        for first in range(0, len(chosen), MAX_COINS_PER_IMAGE):
            group = chosen[first : first + MAX_COINS_PER_IMAGE]
            panels = []
            for coin in group:
                coin_snapshot = snapshot.coins[coin]
                position = positions.get(coin) if kind == "intraday" else None
                panels.append(
                    panel_from_frame(
                        coin,
                        coin_snapshot.intraday if kind == "intraday" else coin_snapshot.context,
                        timeframe=timeframe,
                        at=snapshot.at,
                        marks=PositionMarks.from_position(position) if position else None,
                    )
                )
            rows, columns = grid_shape(len(group))
            width, height = fit_size(*design_size(len(group)), limits)
            specs.append(
                ChartSpec(
                    kind=kind,
                    panels=tuple(panels),
                    rows=rows,
                    columns=columns,
                    width_px=width,
                    height_px=height,
                )
            )
    return tuple(specs[: limits.max_images])
