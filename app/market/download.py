"""`arena data download`: page an exchange's candles into the candle cache, skipping cached ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Final

from app.domain import timeframe_to_timedelta
from app.errors import ConfigError
from app.market.resample import step_ns

if TYPE_CHECKING:
    # Types only: importing ccxt takes about a second, and a backtest never needs it.
    from app.market.ccxt_feed import CcxtMarketData, DownloadResult

# Called once per coin with (coin, expected candle count); returns the callback that receives
# how many more candles were found (cached or fetched).
ProgressFactory = Callable[[str, int], Callable[[int], None]]

# Exchanges that serve only their latest candles of a series, whatever the start asked for:
# Hyperliquid's candleSnapshot keeps the last 5,000 (about 17 days of 5m candles).
HISTORY_CANDLES: Final = {"hyperliquid": 5000}


def history_start(exchange_id: str, timeframe: str, start: datetime, end: datetime) -> datetime:
    """Return the later of `start` and the oldest candle before `end` the exchange still serves."""
    kept = HISTORY_CANDLES.get(exchange_id)
    if kept is None:
        return start
    # 2% short of the limit: the oldest candle asked for is still served when the page arrives,
    # so the next download does not find it missing and fetch everything again.
    oldest = end - timeframe_to_timedelta(timeframe) * int(kept * 0.98)
    return max(start, oldest)


def expected_candles(start: datetime, end: datetime, timeframe: str) -> int:
    """Return how many `timeframe` candles open in [`start`, `end`) on the clock grid."""
    step = step_ns(timeframe) // 1_000_000
    first = -(-int(start.timestamp() * 1000) // step) * step
    last = int(end.timestamp() * 1000) // step * step
    return max(0, (last - first) // step)


async def download_candles(
    feed: CcxtMarketData,
    *,
    coins: Sequence[str],
    timeframe: str,
    start: datetime,
    end: datetime,
    progress: ProgressFactory | None = None,
) -> list[DownloadResult]:
    """Download closed candles of `coins` in [`start`, `end`) into the feed's candle store.

    The feed (built with its candle store by the composition root) is closed at the end.
    """
    if end <= start:
        raise ConfigError(f"--until ({end}) must be after --since ({start})")
    step_ns(timeframe)
    results: list[DownloadResult] = []
    try:
        await feed.load_markets()
        for coin in coins:
            callback = progress(coin, expected_candles(start, end, timeframe)) if progress else None
            results.append(await feed.download(coin, timeframe, start, end, progress=callback))
    finally:
        await feed.close()
    return results
