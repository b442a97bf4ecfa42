"""`arena data download`: page an exchange's candles into the candle cache, skipping cached ones."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

from app.config import Settings
from app.errors import ConfigError
from app.market.candle_cache import CandleCache
from app.market.ccxt_feed import CcxtMarketData, DownloadResult
from app.market.resample import step_ns

# Called once per coin with (coin, expected candle count); returns the callback that receives
# how many more candles were found (cached or fetched).
ProgressFactory = Callable[[str, int], Callable[[int], None]]


def expected_candles(start: datetime, end: datetime, timeframe: str) -> int:
    """Return how many `timeframe` candles open in [`start`, `end`) on the clock grid."""
    step = step_ns(timeframe) // 1_000_000
    first = -(-int(start.timestamp() * 1000) // step) * step
    last = int(end.timestamp() * 1000) // step * step
    return max(0, (last - first) // step)


async def download_candles(
    settings: Settings,
    *,
    coins: Sequence[str],
    timeframe: str,
    start: datetime,
    end: datetime,
    exchange_id: str | None = None,
    progress: ProgressFactory | None = None,
) -> list[DownloadResult]:
    """Download closed candles of `coins` in [`start`, `end`) into the database's candle cache."""
    if end <= start:
        raise ConfigError(f"--until ({end}) must be after --since ({start})")
    step_ns(timeframe)
    exchange = settings.exchange
    if exchange_id:
        exchange = exchange.model_copy(update={"id": exchange_id})
    cache = CandleCache.from_url(settings.database.url)
    feed = CcxtMarketData(
        coins=list(coins),
        exchange_id=exchange.id,
        api_url=exchange.api_url,
        sandbox=exchange.sandbox,
        quote=exchange.quote,
        timeout_s=exchange.timeout_s,
        cache=cache,
    )
    results: list[DownloadResult] = []
    try:
        await feed.load_markets()
        for coin in coins:
            callback = progress(coin, expected_candles(start, end, timeframe)) if progress else None
            results.append(await feed.download(coin, timeframe, start, end, progress=callback))
    finally:
        await feed.close()
        await asyncio.to_thread(cache.engine.dispose)
    return results
