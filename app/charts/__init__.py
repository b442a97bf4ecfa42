"""Charts for vision agents: candles, EMAs, volume and open positions as PNG images.

`app.charts.spec` plans what each image shows (pure, cheap, no matplotlib) and names it by a key;
`app.charts.render` draws specs into deterministic PNG bytes with matplotlib (import it only
where images are drawn: matplotlib takes a moment to load); `app.charts.tokens` estimates what
an image costs a Qwen-VL model. docs/prompt.md ("What a vision agent sees") shows the layout.
"""

from app.charts.spec import (
    CHART_VERSION,
    ChartLimits,
    ChartSpec,
    Panel,
    PositionMarks,
    plan_market_charts,
)
from app.charts.types import ChartImage

__all__ = [
    "CHART_VERSION",
    "ChartImage",
    "ChartLimits",
    "ChartSpec",
    "Panel",
    "PositionMarks",
    "plan_market_charts",
]
