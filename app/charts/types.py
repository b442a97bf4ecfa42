"""`ChartImage`: one rendered chart, as a request and the records carry it (no matplotlib here)."""

from __future__ import annotations

import base64
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChartImage:
    """A PNG chart: its bytes, their sha256 (the storage key), size and what it shows.

    `spec_key` is the sha256 of what was drawn (`ChartSpec.key`), known before drawing: a
    replay names the image by it without rendering. `caption` is one line: coins, timeframes
    and the UTC time range.
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
