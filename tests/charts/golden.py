"""The fixed market and positions behind the checked-in chart images (tests/charts/expected/).

Regenerate the images after a deliberate chart change (then look at them, and bump
CHART_VERSION when the pixels changed on purpose):

    .venv/bin/python -m tests.charts.golden

The candles come from integer arithmetic (`integer_walk_candles`), so they are the same floats on
every machine; they go through the backtest's `HistoricalMarketData` (resampling and indicators)
like real data. Seven coins: the six of Alpha Arena, a long BTC with its stop and target in view,
a short SOL whose target is off the chart, and HYPE, listed two hours before the snapshot, which
has 40 intraday candles, no EMA50 yet and no closed 4h candle (a second, one-coin image).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.charts.render import ChartRenderer
from app.charts.spec import CHART_VERSION, ChartLimits, plan_market_charts
from app.charts.types import ChartImage
from app.domain import ExitPlan, MarketSnapshot, Position
from app.market.historical import HistoricalMarketData
from tests.fakes.candles import integer_walk_candles

EXPECTED_DIR = Path(__file__).resolve().parent / "expected"
COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE", "HYPE")
LEVELS = {
    "BTC": 100_000.0,
    "ETH": 4_000.0,
    "SOL": 200.0,
    "BNB": 1_000.0,
    "XRP": 2.5,
    "DOGE": 0.2,
    "HYPE": 40.0,
}
START = datetime(2025, 10, 10, tzinfo=UTC)
STEP = timedelta(minutes=3)
PERIODS = 5600
AT = START + PERIODS * STEP
HYPE_LISTED_AT = AT - timedelta(hours=2)


def golden_candles() -> dict[str, object]:
    """Return the 3m candles of every coin (HYPE's start two hours before `AT`)."""
    candles: dict[str, object] = {}
    for seed, coin in enumerate(COINS, start=11):
        if coin == "HYPE":
            periods = int((AT - HYPE_LISTED_AT) / STEP)
            candles[coin] = integer_walk_candles(
                start=HYPE_LISTED_AT, periods=periods, step=STEP, price=LEVELS[coin], seed=seed
            )
        else:
            candles[coin] = integer_walk_candles(
                start=START, periods=PERIODS, step=STEP, price=LEVELS[coin], seed=seed
            )
    return candles


def golden_market() -> HistoricalMarketData:
    """Return the market the golden charts are drawn from (3m intraday, 4h context)."""
    return HistoricalMarketData(
        golden_candles(),  # type: ignore[arg-type]
        intraday_timeframe="3m",
        context_timeframe="4h",
    )


def golden_positions(snapshot: MarketSnapshot) -> dict[str, Position]:
    """A long BTC (stop 0.8% below, target 1% above) and a short SOL (target 15% below)."""
    btc, sol = snapshot.price("BTC"), snapshot.price("SOL")
    return {
        "BTC": Position(
            coin="BTC",
            side="long",
            quantity=0.05,
            entry_price=round(btc * 0.998, 1),
            leverage=10,
            margin_usd=500.0,
            liquidation_price=round(btc * 0.91, 1),
            opened_at=AT - timedelta(hours=1),
            exit_plan=ExitPlan(profit_target=round(btc * 1.01, 1), stop_loss=round(btc * 0.992, 1)),
        ),
        "SOL": Position(
            coin="SOL",
            side="short",
            quantity=10.0,
            entry_price=round(sol * 1.002, 3),
            leverage=5,
            margin_usd=400.0,
            liquidation_price=round(sol * 1.19, 3),
            opened_at=AT - timedelta(hours=2),
            exit_plan=ExitPlan(profit_target=round(sol * 0.85, 3), stop_loss=round(sol * 1.006, 3)),
        ),
    }


def golden_images(market: HistoricalMarketData | None = None) -> tuple[ChartImage, ...]:
    """Return the charts of the golden snapshot, in request order."""
    market = market or golden_market()
    snapshot = market.snapshot_at(AT)
    specs = plan_market_charts(snapshot, golden_positions(snapshot), ChartLimits())
    return ChartRenderer().render_all(specs)


def expected_name(index: int, image: ChartImage) -> str:
    """Return the file name of the `index`-th golden image."""
    return f"{index}_{image.kind}_{'-'.join(image.coins)}_{CHART_VERSION}.png"


def main() -> None:
    """Rewrite the expected images from the current renderer."""
    EXPECTED_DIR.mkdir(parents=True, exist_ok=True)
    for old in EXPECTED_DIR.glob("*.png"):
        old.unlink()
    for index, image in enumerate(golden_images(), start=1):
        path = EXPECTED_DIR / expected_name(index, image)
        path.write_bytes(image.png)
        sys.stdout.write(f"wrote {path} ({image.size_bytes} bytes): {image.caption}\n")


if __name__ == "__main__":
    main()
