"""No look-ahead in the charts: changing every candle after T leaves every image at or before T
byte-identical (and the images after T change, so the test could fail).

The snapshots come from the backtest's `HistoricalMarketData`, as in tests/test_lookahead.py for
the text prompt; the images are planned and drawn from them the way a vision agent gets them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from app.charts.render import ChartRenderer
from app.charts.spec import plan_market_charts
from app.market.historical import HistoricalMarketData
from tests.fakes.candles import six_coin_market

COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
STEP = timedelta(minutes=5)
CYCLES = 60


def charts_by_cycle(
    candles: dict[str, pd.DataFrame], times: list[datetime]
) -> list[tuple[str, ...]]:
    market = HistoricalMarketData(candles, intraday_timeframe="5m", context_timeframe="4h")
    renderer = ChartRenderer()
    found = []
    for moment in times:
        snapshot = market.snapshot_at(moment)
        images = renderer.render_all(plan_market_charts(snapshot))
        found.append(tuple(image.sha256 for image in images))
    return found


@pytest.mark.parametrize("offset", [23, 48], ids=["inside a 4h candle", "at a 4h boundary"])
def test_changing_candles_after_t_leaves_every_chart_up_to_t_byte_identical(offset: int) -> None:
    candles = six_coin_market(COINS, periods=3300)
    first = HistoricalMarketData(
        candles, intraday_timeframe="5m", context_timeframe="4h"
    ).first_ready_at()
    times = [first + i * STEP for i in range(CYCLES)]
    cut = times[0] + offset * STEP
    if offset == 48:
        # T on a 4h boundary, where a context candle closes exactly at T (and must be drawn).
        assert cut.hour % 4 == 0 and cut.minute == 0
    original = charts_by_cycle(candles, times)

    changed = {}
    for coin, frame in candles.items():
        frame = frame.copy()
        after = frame.index >= cut  # every candle opening at or after T
        frame.loc[after, ["open", "high", "low", "close"]] *= 1.07
        frame.loc[after, "volume"] *= 3.0
        changed[coin] = frame
    redrawn = charts_by_cycle(changed, times)

    issued_by_t = [i for i, moment in enumerate(times) if moment <= cut]
    later = [i for i, moment in enumerate(times) if moment > cut]
    assert issued_by_t and later
    for i in issued_by_t:
        assert redrawn[i] == original[i], f"a chart at {times[i]} saw a candle after {cut}"
    assert any(redrawn[i][0] != original[i][0] for i in later), "the change must show after T"
    if offset == 48:
        # The 4h chart first changes once a changed 4h candle has closed, four hours after T.
        assert all(redrawn[i][1] == original[i][1] for i in later)
