"""`MarketCharts`: the `ChartSource` port over the chart planner and the renderer.

Each cycle a vision agent's prompt gets the images `plan_market_charts` plans for the snapshot
and the agent's open positions. They are named by their spec keys at once (cheap: no drawing)
and drawn only when something needs the bytes: a request to a model, or the records. A replay
that finds its answers by the keys therefore draws nothing. The renderer keeps recent images by
spec key, so agents with the same positions (and every agent's 4h context image) share one
drawing per cycle.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from app.charts.render import ChartRenderer
from app.charts.spec import ChartLimits, ChartSpec, plan_market_charts
from app.domain import ChartImage, ImagePart, MarketSnapshot, Position


class _Drawing:
    """Draws one spec once, when first asked (from any thread)."""

    __slots__ = ("_image", "_lock", "_max_bytes", "_renderer", "_spec")

    def __init__(self, spec: ChartSpec, renderer: ChartRenderer, max_bytes: int) -> None:
        self._spec: ChartSpec | None = spec
        self._renderer = renderer
        self._max_bytes = max_bytes
        self._image: ChartImage | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ChartImage:
        with self._lock:
            if self._image is None:
                assert self._spec is not None
                self._image = self._renderer.render(self._spec, max_bytes=self._max_bytes)
                self._spec = None  # the candles are no longer needed
            return self._image


class MarketCharts:
    """Chart images for vision agents: planned per call, drawn once per spec when needed."""

    def __init__(
        self,
        limits: ChartLimits | None = None,
        *,
        coins: Sequence[str] | None = None,
        renderer: ChartRenderer | None = None,
    ) -> None:
        self.limits = limits or ChartLimits()
        self.coins = tuple(coins) if coins else None
        self.renderer = renderer or ChartRenderer()
        # The drawings of the latest snapshot, by spec key: vision agents of one cycle share.
        self._drawings: dict[str, _Drawing] = {}
        self._lock = threading.Lock()

    def charts(
        self, snapshot: MarketSnapshot, positions: Mapping[str, Position]
    ) -> tuple[ImagePart, ...]:
        """Return the images of `snapshot` for an agent holding `positions` (not drawn yet)."""
        specs = plan_market_charts(snapshot, positions, self.limits, coins=self.coins)
        parts = []
        with self._lock:
            keys = {spec.key for spec in specs}
            if not keys <= self._drawings.keys() and len(self._drawings) > 64:
                self._drawings = {k: v for k, v in self._drawings.items() if k in keys}
            for spec in specs:
                drawing = self._drawings.get(spec.key)
                if drawing is None:
                    drawing = _Drawing(spec, self.renderer, self.limits.max_image_bytes)
                    self._drawings[spec.key] = drawing
                parts.append(
                    ImagePart(
                        key=spec.key,
                        caption=spec.caption,
                        kind=spec.kind,
                        width_px=spec.width_px,
                        height_px=spec.height_px,
                        draw=drawing,
                    )
                )
        return tuple(parts)
