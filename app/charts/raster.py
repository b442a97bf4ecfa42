"""A tiny raster canvas of palette indices: rectangles, lines, polylines and hinted text.

Charts are axis-aligned boxes, one-pixel lines and two polylines per panel, so drawing them
straight into a numpy array of palette indices takes a few milliseconds where a plotting
library's figure machinery takes hundreds, and it leaves nothing to chance: integer pixels, a
fixed palette, no anti-aliasing. Text is the DejaVu Sans file bundled with matplotlib, hinted and
rasterised by Pillow's FreeType with its basic layout engine (never Raqm, which a system may or
may not have), thresholded to whole pixels, one bitmap per distinct string, cached. Whole-pixel
text costs a tenth fewer PNG bytes than anti-aliased text and reads as well at 11 pixels.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from app.errors import ConfigError

Color = tuple[int, int, int]
HAlign = Literal["left", "center", "right"]
VAlign = Literal["top", "middle", "bottom"]

_FONT_FILES: Final = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}
# A pixel belongs to a glyph when FreeType covers at least half of it.
_COVERAGE_THRESHOLD: Final = 128


def font_directory() -> Path:
    """Return matplotlib's bundled TrueType folder, found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        folder = Path(location) / "mpl-data" / "fonts" / "ttf"
        if (folder / _FONT_FILES[False]).is_file():
            return folder
    raise ConfigError(
        "the charts need the DejaVu Sans font bundled with matplotlib; reinstall the project "
        "(pip install -e .) so matplotlib is present"
    )


@functools.lru_cache(maxsize=16)
def _font(size_px: int, bold: bool) -> ImageFont.FreeTypeFont:
    path = font_directory() / _FONT_FILES[bold]
    return ImageFont.truetype(str(path), size_px, layout_engine=ImageFont.Layout.BASIC)


@dataclass(frozen=True, slots=True)
class TextMask:
    """A string's pixels in a box of the font's full height, its baseline `ascent` from the top."""

    ink: npt.NDArray[np.bool_]
    ascent: int

    @property
    def width(self) -> int:
        return int(self.ink.shape[1])

    @property
    def height(self) -> int:
        return int(self.ink.shape[0])


@functools.lru_cache(maxsize=8192)
def text_mask(text: str, size_px: int, bold: bool = False) -> TextMask:
    """Return the rasterised `text` (cached: tick labels repeat from one cycle to the next)."""
    font = _font(size_px, bold)
    ascent, descent = font.getmetrics()
    width = max(1, int(np.ceil(font.getlength(text))) + 1)
    image = Image.new("L", (width, ascent + descent), 0)
    ImageDraw.Draw(image).text((0, ascent), text, font=font, fill=255, anchor="ls")
    ink = np.asarray(image, dtype=np.uint8) >= _COVERAGE_THRESHOLD
    ink.setflags(write=False)
    return TextMask(ink=ink, ascent=ascent)


class Palette:
    """Named colours and their indices (at most 16: a 4-bit PNG)."""

    def __init__(self, colors: Sequence[tuple[str, Color]]) -> None:
        if not 1 <= len(colors) <= 16:
            raise ValueError("a chart palette holds 1 to 16 colours")
        self._index = {name: i for i, (name, _) in enumerate(colors)}
        self.colors: npt.NDArray[np.uint8] = np.array([c for _, c in colors], dtype=np.uint8)

    def __getitem__(self, name: str) -> int:
        return self._index[name]


class Canvas:
    """A height x width array of palette indices with clipped drawing primitives."""

    def __init__(self, width_px: int, height_px: int, palette: Palette, background: str) -> None:
        self.width = width_px
        self.height = height_px
        self.palette = palette
        self.pixels: npt.NDArray[np.uint8] = np.full(
            (height_px, width_px), palette[background], dtype=np.uint8
        )

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: str) -> None:
        """Fill the pixels x0 <= x < x1, y0 <= y < y1 (clipped to the canvas)."""
        x0, x1 = max(0, x0), min(self.width, x1)
        y0, y1 = max(0, y0), min(self.height, y1)
        if x0 < x1 and y0 < y1:
            self.pixels[y0:y1, x0:x1] = self.palette[color]

    def rects(
        self,
        x0: npt.NDArray[np.int64],
        y0: npt.NDArray[np.int64],
        x1: npt.NDArray[np.int64],
        y1: npt.NDArray[np.int64],
        colors: npt.NDArray[np.uint8],
    ) -> None:
        """Fill many rectangles at once (`colors` are palette indices), clipped; later wins."""
        x0, x1 = np.clip(x0, 0, self.width), np.clip(x1, 0, self.width)
        y0, y1 = np.clip(y0, 0, self.height), np.clip(y1, 0, self.height)
        widths = np.maximum(x1 - x0, 0)
        counts = widths * np.maximum(y1 - y0, 0)
        total = int(counts.sum())
        if not total:
            return
        owner = np.repeat(np.arange(counts.shape[0]), counts)
        local = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        span = widths[owner]
        self.pixels[y0[owner] + local // span, x0[owner] + local % span] = colors[owner]

    def hline(self, y: int, x0: int, x1: int, color: str, *, width: int = 1, dash: int = 0) -> None:
        """Draw a horizontal line from x0 to x1 (exclusive); `dash` > 0: dashes of that length."""
        if not dash:
            self.rect(x0, y, x1, y + width, color)
            return
        x0, x1 = max(0, x0), min(self.width, x1)
        y0, y1 = max(0, y), min(self.height, y + width)
        if x0 >= x1 or y0 >= y1:
            return
        on = ((np.arange(x0, x1) - x0) % (dash + dash // 2)) < dash
        band = self.pixels[y0:y1, x0:x1]
        band[:, on] = self.palette[color]

    def vline(self, x: int, y0: int, y1: int, color: str, *, width: int = 1) -> None:
        """Draw a vertical line from y0 to y1 (exclusive)."""
        self.rect(x, y0, x + width, y1, color)

    def polyline(
        self,
        xs: npt.NDArray[np.float64],
        ys: npt.NDArray[np.float64],
        color: str,
        *,
        clip: tuple[int, int, int, int],
        thickness: int = 2,
    ) -> None:
        """Draw straight segments between consecutive finite points (NaN breaks the line)."""
        finite = np.isfinite(xs) & np.isfinite(ys)
        pairs = np.flatnonzero(finite[:-1] & finite[1:])
        if not pairs.size:
            return
        x0, y0, x1, y1 = xs[pairs], ys[pairs], xs[pairs + 1], ys[pairs + 1]
        steps = np.maximum(np.abs(x1 - x0), np.abs(y1 - y0)).astype(np.int64) + 1
        owner = np.repeat(np.arange(pairs.size), steps)
        starts = np.cumsum(steps) - steps
        t = (np.arange(owner.size) - starts[owner]) / np.maximum(steps[owner] - 1, 1)
        px = np.rint(x0[owner] + (x1 - x0)[owner] * t).astype(np.int64)
        py = np.rint(y0[owner] + (y1 - y0)[owner] * t).astype(np.int64)
        left, top, right, bottom = clip
        offsets = range(-(thickness // 2), thickness - thickness // 2)
        all_x = np.concatenate([px + dx for dx in offsets for _ in offsets])
        all_y = np.concatenate([py + dy for _ in offsets for dy in offsets])
        inside = (all_x >= left) & (all_x < right) & (all_y >= top) & (all_y < bottom)
        self.pixels[all_y[inside], all_x[inside]] = self.palette[color]

    def text(
        self,
        x: int,
        y: int,
        text: str,
        color: str,
        *,
        size_px: int,
        bold: bool = False,
        ha: HAlign = "left",
        va: VAlign = "top",
        box: str | None = None,
    ) -> tuple[int, int, int, int]:
        """Write `text` anchored at (x, y); `box` fills its rectangle first. Return the box."""
        if not text:
            return (x, y, x, y)
        mask = text_mask(text, size_px, bold)
        left = x - (mask.width if ha == "right" else mask.width // 2 if ha == "center" else 0)
        top = y - (mask.height if va == "bottom" else mask.height // 2 if va == "middle" else 0)
        # Never cut a label at the image's edge: move it in.
        left = max(0, min(left, self.width - mask.width))
        if box is not None:
            self.rect(left - 2, top, left + mask.width + 1, top + mask.height, box)
        x0, y0 = max(0, left), max(0, top)
        x1, y1 = min(self.width, left + mask.width), min(self.height, top + mask.height)
        if x0 >= x1 or y0 >= y1:
            return (left, top, left + mask.width, top + mask.height)
        ink = mask.ink[y0 - top : y1 - top, x0 - left : x1 - left]
        self.pixels[y0:y1, x0:x1][ink] = self.palette[color]
        return (left, top, left + mask.width, top + mask.height)

    def text_height(self, size_px: int, bold: bool = False) -> int:
        """Return the height in pixels of a line of text."""
        return text_mask("0", size_px, bold).height

    def text_width(self, text: str, size_px: int, bold: bool = False) -> int:
        """Return the width in pixels `text` takes."""
        return text_mask(text, size_px, bold).width
