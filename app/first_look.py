"""`arena start` without a model key: the baselines backtested on recent real candles.

Where the candles come from, in order:

1. the configured exchange (`EXCHANGE_ID`, through ccxt's public endpoints: no key), the last
   three weeks of 5-minute candles of `SYMBOLS`, kept in the candle cache (the `candle` table)
   so the next first look only fetches what is new. An exchange that serves only its latest
   candles (Hyperliquid: 5,000 per series, about 17 days of 5m) gives what it has;
2. candle files in `data/market/` when the exchange cannot be reached;
3. synthetic sample data (`app.market.sample`) when neither is there: every output of that run
   says SYNTHETIC.

Each fallback is explained in one line (`FirstLookData.notes`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from app.backtest import BacktestOptions
from app.config import AgentConfig, Settings
from app.db.session import Database
from app.domain import LlmMode, floor_time, timeframe_to_timedelta
from app.errors import AppError
from app.market.download import ProgressFactory, history_start
from app.market.sample import SAMPLE_LABEL, write_sample_data
from app.wiring import CACHE_PREFIX, download

log = logging.getLogger(__name__)

FIRST_LOOK_TIMEFRAME: Final = "5m"
# Three weeks: about 9 days warm the 4h EMA50 up, the rest is replayed.
FIRST_LOOK_HISTORY: Final = timedelta(days=21)
# The replayed window: the last two weeks of the data, after the warm-up.
FIRST_LOOK_WINDOW_DAYS: Final = 14
# A download that found less than this share of the candles it expected is not used.
MIN_COMPLETE: Final = 0.9
MARKET_FOLDER: Final = Path("data") / "market"
SAMPLE_FOLDER: Final = Path("data") / "sample-synthetic"
BASELINES: Final = (
    AgentConfig(name="buy_and_hold", provider="baseline", model="buy_and_hold"),
    AgentConfig(name="ema_trend", provider="baseline", model="ema_trend"),
)


@dataclass(frozen=True, slots=True)
class FirstLookData:
    """What the first look replays and how to describe it."""

    data: tuple[Path, ...]
    label: str
    synthetic: bool = False
    cache_timeframe: str | None = None
    # One line per source that could not be used, saying why.
    notes: tuple[str, ...] = ()

    def options(self, settings: Settings) -> BacktestOptions:
        """Return the backtest of the two baselines over this data."""
        return BacktestOptions(
            data=self.data,
            agents=BASELINES,
            symbols=None if self.cache_timeframe is None else tuple(settings.symbols),
            llm_mode=LlmMode.REPLAY,
            cash_usd=settings.risk.starting_cash_usd,
            window_days=FIRST_LOOK_WINDOW_DAYS,
            synthetic=self.synthetic,
            cache_timeframe=self.cache_timeframe,
        )


class IncompleteDownloadError(AppError):
    """The exchange answered but served too few of the candles asked for."""


async def downloaded(
    settings: Settings,
    database: Database,
    *,
    now: datetime,
    progress: ProgressFactory | None = None,
) -> FirstLookData:
    """Download the first look's candles into the cache; raise `AppError` saying why not."""
    exchange = settings.exchange.id
    step = timeframe_to_timedelta(FIRST_LOOK_TIMEFRAME)
    end = floor_time(now, step)
    start = history_start(exchange, FIRST_LOOK_TIMEFRAME, end - FIRST_LOOK_HISTORY, end)
    results = await download(
        settings,
        database,
        coins=list(settings.symbols),
        timeframe=FIRST_LOOK_TIMEFRAME,
        start=start,
        end=end,
        progress=progress,
    )
    for result in results:
        found = result.cached_before + result.fetched
        if found < MIN_COMPLETE * result.expected:
            raise IncompleteDownloadError(
                f"{exchange} served {found:,} of the {result.expected:,} {result.symbol} "
                f"{FIRST_LOOK_TIMEFRAME} candles since {start:%Y-%m-%d %H:%M} UTC"
            )
    source = results[0].source
    days = (end - start) / timedelta(days=1)
    return FirstLookData(
        data=(Path(f"{CACHE_PREFIX}{source}"),),
        label=f"{exchange}'s {FIRST_LOOK_TIMEFRAME} candles of the last {days:.0f} days",
        cache_timeframe=FIRST_LOOK_TIMEFRAME,
    )


async def first_look_data(
    settings: Settings,
    database: Database,
    *,
    now: datetime,
    progress: ProgressFactory | None = None,
    market_folder: Path = MARKET_FOLDER,
    sample_folder: Path = SAMPLE_FOLDER,
) -> FirstLookData:
    """Return the first look's data: downloaded, else `market_folder`, else synthetic."""
    notes: list[str] = []
    try:
        found = await downloaded(settings, database, now=now, progress=progress)
    except AppError as error:
        notes.append(f"Could not download candles from {settings.exchange.id}: {error}.")
    else:
        return found
    if market_folder.is_dir() and any(
        path.is_file() and path.suffix != ".txt" for path in market_folder.iterdir()
    ):
        notes.append(f"Using the candle files in {market_folder}/ instead.")
        return FirstLookData(
            data=(market_folder,), label=f"the candles in {market_folder}", notes=tuple(notes)
        )
    notes.append(
        f"No candle files in {market_folder}/ either: this first look runs on SYNTHETIC data "
        "(a seeded random walk, not market prices)."
    )
    return FirstLookData(
        data=(write_sample_data(sample_folder, days=FIRST_LOOK_HISTORY.days),),
        label=SAMPLE_LABEL,
        synthetic=True,
        notes=tuple(notes),
    )
