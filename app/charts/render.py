"""Draw `ChartSpec`s into PNG bytes: the same spec always gives the same bytes.

An adapter (it reads a font file and uses Pillow's FreeType), so the pure core never imports it.
Each image is a grid of panels; a panel is one coin on one timeframe: candles (wick and body),
EMA20 and EMA50, volume bars under the candles, prices on the right, UTC times below, and, on an
agent's intraday chart, its open position's entry, stop and target as dashed lines.

Why the bytes are stable: everything is drawn in integer pixels into a palette-index array
(`app.charts.raster`), text comes from the font file bundled with matplotlib, and the PNG is
written by `app.charts.png` with no metadata. Nothing reads the clock, the locale, a user's
configuration or a system font.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np
import numpy.typing as npt

from app.charts.png import encode_indexed_png
from app.charts.raster import Canvas, Palette
from app.charts.spec import (
    HEADER_HEIGHT_PX,
    MAX_CANDLES,
    ChartLimits,
    ChartSpec,
    Panel,
    PositionMarks,
    plan_market_charts,
)
from app.charts.types import ChartImage
from app.domain import MarketSnapshot, Position, timeframe_to_timedelta
from app.errors import ConfigError
from app.prompts.formatting import format_sig

# At most sixteen colours: a 4-bit PNG.
PALETTE: Final = Palette(
    [
        ("white", (255, 255, 255)),
        ("ink", (33, 33, 33)),
        ("faint", (140, 140, 140)),
        ("grid", (232, 232, 232)),
        ("frame", (190, 190, 190)),
        ("up", (38, 166, 154)),
        ("down", (229, 57, 53)),
        ("up_volume", (150, 212, 206)),
        ("down_volume", (242, 170, 168)),
        ("ema20", (251, 140, 0)),
        ("ema50", (57, 73, 171)),
        ("entry", (30, 136, 229)),
        ("stop", (198, 40, 40)),
        ("target", (46, 125, 50)),
    ]
)

# Geometry, in pixels.
CELL_PAD_PX: Final = 8
PRICE_LABELS_PX: Final = 62
TIME_LABELS_PX: Final = 17
VOLUME_SHARE: Final = 0.2
GAP_PX: Final = 3
TICK_PX: Final = 3
SMALL_PX: Final = 11
LABEL_PX: Final = 12
HEADING_PX: Final = 13
# Headroom over the highest candle, for the panel's title.
TOP_ROOM: Final = 0.12
BOTTOM_ROOM: Final = 0.04

_YMap = Callable[[npt.NDArray[np.float64]], npt.NDArray[np.float64]]


# -- ticks -------------------------------------------------------------------------------------


def price_ticks(low: float, high: float, most: int = 5) -> list[float]:
    """Return round price levels inside [low, high]: the finest 1-2-2.5-5 step giving at most
    `most` of them."""
    span = high - low
    if not (math.isfinite(span) and span > 0):
        return []
    magnitude = 10.0 ** (math.floor(math.log10(span)) - 2)
    for power in range(4):
        for mantissa in (1.0, 2.0, 2.5, 5.0):
            step = mantissa * magnitude * 10.0**power
            first = math.ceil(low / step - 1e-9)
            last = math.floor(high / step + 1e-9)
            if last - first + 1 <= most:
                # Round away float noise (0.30000000000000004) so labels and pixels stay put.
                return [float(f"{k * step:.12g}") for k in range(first, last + 1)]
    return []


_TIME_STEPS: Final = tuple(
    timedelta(minutes=m)
    for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720, 1440, 2880, 4320, 10080)
)
_MOST_TIME_TICKS: Final = 6


def time_ticks(open_ns: npt.NDArray[np.int64], timeframe: str) -> tuple[list[int], list[str]]:
    """Return the indices and labels of candles that open on a round time (HH:MM or MM-DD)."""
    if not open_ns.shape[0]:
        return [], []
    candle = timeframe_to_timedelta(timeframe)
    span = candle * MAX_CANDLES
    step = next(
        (s for s in _TIME_STEPS if s >= candle and span / s <= _MOST_TIME_TICKS), _TIME_STEPS[-1]
    )
    step_ns = int(step.total_seconds()) * 1_000_000_000
    chosen = [int(i) for i in np.flatnonzero(open_ns % step_ns == 0)]
    daily = step >= timedelta(days=1)
    labels = []
    for i in chosen:
        moment = datetime.fromtimestamp(int(open_ns[i]) // 1_000_000_000, tz=UTC)
        labels.append(moment.strftime("%m-%d") if daily else moment.strftime("%H:%M"))
    return chosen, labels


# -- one panel ---------------------------------------------------------------------------------


def price_range(panel: Panel) -> tuple[float, float]:
    """Return the price range a panel shows: candles, EMAs, and the levels near them."""
    if not len(panel):
        return 0.0, 1.0
    low = float(np.nanmin(panel.column("low")))
    high = float(np.nanmax(panel.column("high")))
    for name in ("ema20", "ema50"):
        column = panel.column(name)
        finite = column[np.isfinite(column)]
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    span = high - low
    if panel.marks is not None:
        # A level within one span of the candles widens the view to show its line; a level
        # further away is named at the edge instead of squashing the candles flat.
        for _, level in panel.marks.levels():
            if low - span <= level <= high + span:
                low, high = min(low, level), max(high, level)
    span = high - low
    if span <= 0:
        span = abs(high) * 0.002 or 1.0
        low, high = low - span / 2, high + span / 2
    return low - span * BOTTOM_ROOM, high + span * TOP_ROOM


class _PanelDrawer:
    """Draws one panel into a box of the canvas."""

    def __init__(self, canvas: Canvas, left: int, top: int, width: int, height: int) -> None:
        self.canvas = canvas
        self.left, self.top = left, top
        self.plot_width = width - PRICE_LABELS_PX
        plot_height = height - TIME_LABELS_PX
        self.volume_height = int(plot_height * VOLUME_SHARE)
        self.price_height = plot_height - self.volume_height - GAP_PX
        self.right = left + self.plot_width
        self.price_bottom = top + self.price_height
        self.volume_top = self.price_bottom + GAP_PX
        self.volume_bottom = self.volume_top + self.volume_height
        self.slot = self.plot_width / MAX_CANDLES
        self.body = max(1, int(self.slot * 0.7)) | 1

    def x_of(self, slots: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.floor(self.left + (slots + 0.5) * self.slot)

    def draw(self, panel: Panel, *, time_labels: bool = True) -> None:
        canvas = self.canvas
        count = len(panel)
        slots = np.arange(count, dtype=float) + (MAX_CANDLES - count)
        xs = self.x_of(slots).astype(np.int64)
        low, high = price_range(panel)
        scale = (self.price_height - 1) / (high - low)

        def y_of(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
            return self.top + (high - values) * scale

        # A position's level is tagged on the price axis; a round price too close to it yields.
        tagged = [
            float(y_of(np.array([price]))[0])
            for _, price in (panel.marks.levels() if panel.marks is not None else ())
            if low <= price <= high
        ]
        label_height = canvas.text_height(SMALL_PX)
        for tick in price_ticks(low, high) if count else []:
            y = round(float(y_of(np.array([tick]))[0]))
            canvas.hline(y, self.left, self.right, "grid")
            if any(abs(y - tag) < label_height for tag in tagged):
                continue
            canvas.hline(y, self.right, self.right + TICK_PX, "faint")
            canvas.text(
                self.right + TICK_PX + 3,
                y,
                format_sig(tick, 7),
                "ink",
                size_px=SMALL_PX,
                va="middle",
            )
        indices, labels = time_ticks(panel.open_ns, panel.timeframe)
        for index, label in zip(indices, labels, strict=True):
            x = int(xs[index])
            canvas.vline(x, self.top, self.price_bottom, "grid")
            canvas.vline(x, self.volume_top, self.volume_bottom, "grid")
            if time_labels:
                canvas.vline(x, self.volume_bottom, self.volume_bottom + TICK_PX, "faint")
                canvas.text(
                    x,
                    self.volume_bottom + TICK_PX + 1,
                    label,
                    "ink",
                    size_px=SMALL_PX,
                    ha="center",
                )
        if count:
            self._candles(panel, xs, y_of)
            self._volume(panel, xs)
            clip = (self.left, self.top, self.right, self.price_bottom)
            for name in ("ema50", "ema20"):
                canvas.polyline(
                    self.x_of(slots), y_of(panel.column(name)), name, clip=clip, thickness=2
                )
        self._frame()
        title = f"{panel.coin} {panel.timeframe}"
        if count:
            title += f"  last close {format_sig(float(panel.column('close')[-1]), 7)}"
        title_box = canvas.text(
            self.left + 4, self.top + 3, title, "ink", size_px=LABEL_PX, bold=True, box="white"
        )
        if panel.marks is not None:
            self._levels(panel.marks, low, high, y_of, avoid=title_box)
        if not count:
            canvas.text(
                self.left + self.plot_width // 2,
                self.top + self.price_height // 2,
                "no closed candles yet",
                "faint",
                size_px=LABEL_PX,
                ha="center",
                va="middle",
            )

    def _candles(self, panel: Panel, xs: npt.NDArray[np.int64], y_of: _YMap) -> None:
        opens, closes = panel.column("open"), panel.column("close")
        drawn = np.isfinite(opens) & np.isfinite(closes)
        xs, opens, closes = xs[drawn], opens[drawn], closes[drawn]
        highs, lows = panel.column("high")[drawn], panel.column("low")[drawn]
        colors = np.where(closes >= opens, PALETTE["up"], PALETTE["down"]).astype(np.uint8)
        tops = np.rint(y_of(np.fmax(highs, np.maximum(opens, closes)))).astype(np.int64)
        bottoms = np.rint(y_of(np.fmin(lows, np.minimum(opens, closes)))).astype(np.int64)
        body_tops = np.rint(y_of(np.maximum(opens, closes))).astype(np.int64)
        # A body is at least one pixel tall, so a doji still shows.
        body_bottoms = np.rint(y_of(np.minimum(opens, closes))).astype(np.int64) + 1
        half = self.body // 2
        self.canvas.rects(xs, tops, xs + 1, bottoms + 1, colors)
        self.canvas.rects(xs - half, body_tops, xs + half + 1, body_bottoms, colors)

    def _volume(self, panel: Panel, xs: npt.NDArray[np.int64]) -> None:
        volumes = np.nan_to_num(panel.column("volume"), nan=0.0)
        most = float(volumes.max()) if volumes.size else 0.0
        if most <= 0:
            return
        heights = np.rint(volumes / (most * 1.08) * (self.volume_height - 1)).astype(np.int64)
        up = panel.column("close") >= panel.column("open")
        colors = np.where(up, PALETTE["up_volume"], PALETTE["down_volume"]).astype(np.uint8)
        half = self.body // 2
        bottom = np.full_like(xs, self.volume_bottom)
        self.canvas.rects(xs - half, bottom - heights, xs + half + 1, bottom, colors)

    def _frame(self) -> None:
        canvas = self.canvas
        for top, bottom in ((self.top, self.price_bottom), (self.volume_top, self.volume_bottom)):
            canvas.hline(top, self.left, self.right + 1, "frame")
            canvas.hline(bottom, self.left, self.right + 1, "frame")
            canvas.vline(self.left, top, bottom, "frame")
            canvas.vline(self.right, top, bottom + 1, "frame")

    def _levels(
        self,
        marks: PositionMarks,
        low: float,
        high: float,
        y_of: _YMap,
        *,
        avoid: tuple[int, int, int, int],
    ) -> None:
        canvas = self.canvas
        edge_x = avoid[2] + 16
        for name, price in marks.levels():
            words = f"{marks.side} entry" if name == "entry" else name
            shown = format_sig(price, 7)
            if low <= price <= high:
                y = round(float(y_of(np.array([price]))[0]))
                canvas.hline(y, self.left + 1, self.right, name, width=2, dash=6)
                label_height = canvas.text_height(SMALL_PX)
                # Beside the panel's title rather than over it.
                beside_title = y - 1 - label_height < avoid[3] + 1 and y + 1 > avoid[1]
                canvas.text(
                    avoid[2] + 12 if beside_title else self.left + 4,
                    y - 1,
                    f"{words} {shown}",
                    name,
                    size_px=SMALL_PX,
                    va="bottom",
                    box="white",
                )
                canvas.text(
                    self.right + TICK_PX + 1,
                    y,
                    shown,
                    name,
                    size_px=SMALL_PX,
                    bold=True,
                    va="middle",
                    box="white",
                )
            else:
                above = price > high
                arrow = "↑" if above else "↓"
                y = self.top + 18 if above else self.price_bottom - 2
                canvas.text(
                    edge_x,
                    y,
                    f"{arrow} {words} {shown} (off chart)",
                    name,
                    size_px=SMALL_PX,
                    va="top" if above else "bottom",
                    box="white",
                )
                edge_x += canvas.text_width(f"{arrow} {words} {shown} (off chart)", SMALL_PX) + 12


# -- one image ---------------------------------------------------------------------------------


def _header(canvas: Canvas, spec: ChartSpec) -> None:
    canvas.text(CELL_PAD_PX, 5, spec.heading, "ink", size_px=HEADING_PX, bold=True)
    x = CELL_PAD_PX
    y = 25
    items: list[tuple[str, str, str]] = [
        ("up", "rise", "box"),
        ("down", "fall", "box"),
        ("ema20", "EMA20", "line"),
        ("ema50", "EMA50", "line"),
    ]
    if spec.has_positions:
        items += [
            ("entry", "entry", "dash"),
            ("stop", "stop", "dash"),
            ("target", "target", "dash"),
        ]
    for color, label, kind in items:
        if kind == "box":
            canvas.rect(x, y + 2, x + 7, y + 11, color)
            x += 10
        else:
            canvas.hline(y + 6, x, x + 18, color, width=2, dash=6 if kind == "dash" else 0)
            x += 22
        x = canvas.text(x, y, label, "ink", size_px=SMALL_PX)[2] + 12
    note = "volume bars under each chart; prices on the right; times in UTC"
    if x + canvas.text_width(note, SMALL_PX) <= canvas.width - CELL_PAD_PX:
        canvas.text(x, y, note, "faint", size_px=SMALL_PX)


def draw_spec(spec: ChartSpec) -> npt.NDArray[np.uint8]:
    """Return the palette indices (height x width) of the image of `spec`."""
    canvas = Canvas(spec.width_px, spec.height_px, PALETTE, "white")
    _header(canvas, spec)
    cell_w = spec.width_px // spec.columns
    cell_h = (spec.height_px - HEADER_HEIGHT_PX) // spec.rows
    for index, panel in enumerate(spec.panels):
        row, column = divmod(index, spec.columns)
        drawer = _PanelDrawer(
            canvas,
            left=column * cell_w + CELL_PAD_PX,
            top=HEADER_HEIGHT_PX + row * cell_h + 2,
            width=cell_w - CELL_PAD_PX,
            height=cell_h - CELL_PAD_PX,
        )
        below = index + spec.columns
        # Coins of one timeframe share their candle times: label them under the lowest only.
        shared_times = below < len(spec.panels) and _same_times(panel, spec.panels[below])
        drawer.draw(panel, time_labels=not shared_times)
    return canvas.pixels


def _same_times(panel: Panel, other: Panel) -> bool:
    return panel.timeframe == other.timeframe and np.array_equal(panel.open_ns, other.open_ns)


# -- the renderer ------------------------------------------------------------------------------


class ChartTooLargeError(ConfigError):
    """A chart's PNG is over the configured byte limit."""


class ChartRenderer:
    """Render specs to `ChartImage`s, keeping the last `cache_size` images by spec key.

    One render at a time (the font objects are not shared across threads safely).
    """

    def __init__(self, *, cache_size: int = 32) -> None:
        self._images: OrderedDict[str, ChartImage] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def render(self, spec: ChartSpec, *, max_bytes: int | None = None) -> ChartImage:
        """Return the image of `spec` (from the cache when the same spec was drawn lately)."""
        with self._lock:
            image = self._images.get(spec.key)
            if image is not None:
                self._images.move_to_end(spec.key)
            else:
                png = encode_indexed_png(draw_spec(spec), PALETTE.colors)
                image = ChartImage(
                    png=png,
                    sha256=hashlib.sha256(png).hexdigest(),
                    width_px=spec.width_px,
                    height_px=spec.height_px,
                    caption=spec.caption,
                    kind=spec.kind,
                    coins=spec.coins,
                    timeframes=spec.timeframes,
                    spec_key=spec.key,
                )
                self._images[spec.key] = image
                while len(self._images) > self._cache_size:
                    self._images.popitem(last=False)
        if max_bytes is not None and image.size_bytes > max_bytes:
            raise ChartTooLargeError(
                f"the {spec.kind} chart of {', '.join(spec.coins)} is {image.size_bytes} bytes, "
                f"over the limit of {max_bytes} (VISION_MAX_IMAGE_BYTES)"
            )
        return image

    def render_all(
        self, specs: Iterable[ChartSpec], *, max_bytes: int | None = None
    ) -> tuple[ChartImage, ...]:
        """Render several specs, in order."""
        return tuple(self.render(spec, max_bytes=max_bytes) for spec in specs)


def render_market_charts(
    snapshot: MarketSnapshot,
    positions: Mapping[str, Position] | None = None,
    limits: ChartLimits | None = None,
    *,
    coins: Sequence[str] | None = None,
    renderer: ChartRenderer | None = None,
) -> tuple[ChartImage, ...]:
    """Return the chart images a vision agent with open `positions` gets for `snapshot`."""
    limits = limits or ChartLimits()
    specs = plan_market_charts(snapshot, positions, limits, coins=coins)
    return (renderer or ChartRenderer()).render_all(specs, max_bytes=limits.max_image_bytes)
