"""HistoricalMarketData: snapshots from files, resampled on clock boundaries, no look-ahead."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from app.errors import ConfigError, DataUnavailableError
from app.indicators import CONTEXT_INDICATOR_COLUMNS, INTRADAY_INDICATOR_COLUMNS
from app.market import HistoricalMarketData, load_data_set, resample_candles
from app.ports import MarketData
from tests.conftest import shared_data

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def minute_candles(count: int, start: datetime = T0, step: str = "1min") -> pd.DataFrame:
    """Candle i has open = i, close = i + 0.5, high = i + 1, low = i - 1, volume = 1."""
    index = pd.date_range(start, periods=count, freq=step, tz="UTC", name="open_time")
    values = np.arange(count, dtype=float)
    return pd.DataFrame(
        {
            "open": values,
            "high": values + 1,
            "low": values - 1,
            "close": values + 0.5,
            "volume": 1.0,
        },
        index=index,
    )


@pytest.fixture(scope="module")
def season_data() -> dict[str, object]:
    """BTC and ETH 5m candles, funding and marks for 2025-09-01 to 2025-11-04."""
    data = load_data_set([shared_data("market")], coins=["BTC", "ETH"])
    window = slice(pd.Timestamp("2025-09-01", tz="UTC"), pd.Timestamp("2025-11-03 23:59", tz="UTC"))
    return {
        "candles": {coin: frame.loc[window] for coin, frame in data.candles.items()},
        "funding": {coin: series.loc[window] for coin, series in data.funding.items()},
        "marks": {coin: frame.loc[window] for coin, frame in data.marks.items()},
    }


@pytest.fixture(scope="module")
def season(season_data: dict[str, object]) -> HistoricalMarketData:
    return HistoricalMarketData(
        season_data["candles"],  # type: ignore[arg-type]
        funding=season_data["funding"],  # type: ignore[arg-type]
        marks=season_data["marks"],  # type: ignore[arg-type]
        intraday_timeframe="15m",
        context_timeframe="4h",
    )


def test_resampling_aggregates_on_clock_boundaries() -> None:
    """Minutes 0-2 make the 00:00 3m candle: open 0, high max(1,2,3) = 3, low min(-1,0,1) = -1,
    close 2.5, volume 3; minutes 3-5 make the 00:03 candle: open 3, close 5.5."""
    frame = resample_candles(minute_candles(9), "3m", "1m")
    assert list(frame.index) == [pd.Timestamp(T0) + pd.Timedelta(minutes=m) for m in (0, 3, 6)]
    assert frame.iloc[0].tolist() == [0.0, 3.0, -1.0, 2.5, 3.0]
    assert frame.iloc[1]["open"] == 3.0 and frame.iloc[1]["close"] == 5.5


def test_resampling_drops_buckets_cut_by_either_end_of_the_data() -> None:
    """Data from 00:01 to 00:07: the 00:00 bucket lacks its first minute and the 00:06 bucket
    its last, so only 00:03 is a whole 3m candle."""
    frame = resample_candles(minute_candles(7, T0 + timedelta(minutes=1)), "3m", "1m")
    assert list(frame.index) == [pd.Timestamp(T0) + pd.Timedelta(minutes=3)]


def test_a_context_candle_appears_only_once_it_has_closed() -> None:
    md = HistoricalMarketData({"BTC": minute_candles(24 * 60)}, intraday_timeframe="3m")
    before = md.snapshot_at(T0 + timedelta(hours=3, minutes=59))
    after = md.snapshot_at(T0 + timedelta(hours=4))
    assert before.coins["BTC"].context.empty
    assert list(after.coins["BTC"].context.index) == [pd.Timestamp(T0)]
    assert after.coins["BTC"].context["close"].iloc[0] == 239.5


def test_the_last_price_is_the_close_of_the_last_closed_base_candle() -> None:
    """At 00:07:30 the 00:06 minute has closed (close 6.5) and 00:07 is still forming."""
    md = HistoricalMarketData({"BTC": minute_candles(60)}, intraday_timeframe="3m")
    snap = md.snapshot_at(T0 + timedelta(minutes=7, seconds=30))
    assert snap.price("BTC") == 6.5
    assert snap.coins["BTC"].intraday.index[-1] == pd.Timestamp(T0) + pd.Timedelta(minutes=3)


def test_an_interval_finer_than_the_data_is_refused_with_a_clear_message() -> None:
    five_minute = {"BTC": minute_candles(100, step="5min")}
    with pytest.raises(ConfigError, match="3m is finer than the data's 5m candles"):
        HistoricalMarketData(five_minute, intraday_timeframe="3m")
    with pytest.raises(ConfigError, match="not a whole number"):
        HistoricalMarketData(five_minute, intraday_timeframe="7m")


def test_the_adapter_implements_the_market_data_port(season: HistoricalMarketData) -> None:
    assert isinstance(season, MarketData)


def test_first_ready_at_waits_for_fifty_four_hour_candles() -> None:
    """From 2025-09-01 00:00 the 50th 4h candle closes 200 h later: 2025-09-09 08:00."""
    data = load_data_set([shared_data("market")], coins=["BTC"])
    md = HistoricalMarketData(
        {"BTC": data.candles["BTC"].loc["2025-09-01":"2025-09-20"]}, intraday_timeframe="5m"
    )
    ready = md.first_ready_at()
    assert ready == datetime(2025, 9, 9, 8, tzinfo=UTC)
    snap = md.snapshot_at(ready)
    assert snap.coins["BTC"].context[list(CONTEXT_INDICATOR_COLUMNS)].iloc[-1].notna().all()
    assert snap.coins["BTC"].intraday[list(INTRADAY_INDICATOR_COLUMNS)].iloc[-1].notna().all()
    earlier = md.snapshot_at(ready - timedelta(hours=4))
    assert np.isnan(earlier.coins["BTC"].context["ema50"].iloc[-1])


def test_too_short_data_cannot_warm_up() -> None:
    md = HistoricalMarketData({"BTC": minute_candles(600)}, intraday_timeframe="3m")
    with pytest.raises(ConfigError, match="too short to warm up"):
        md.first_ready_at()


def test_snapshot_matches_the_alpha_arena_price_cross_check(season: HistoricalMarketData) -> None:
    """The market README: at 2025-10-28 07:04:55 nof1 showed BTC 114286.5; the Binance 5m candle
    opened at 07:00 closed at 114250.0. At 07:05 that candle has just closed."""
    snap = season.snapshot_at(datetime(2025, 10, 28, 7, 5, tzinfo=UTC))
    btc = snap.coins["BTC"]
    assert btc.last_price == 114250.0
    assert abs(btc.last_price / 114286.5 - 1) < 0.0007
    assert btc.symbol == "BTC/USDT:USDT"
    assert btc.intraday.index[-1] == pd.Timestamp("2025-10-28 06:45", tz="UTC")
    assert btc.context.index[-1] == pd.Timestamp("2025-10-28 00:00", tz="UTC")
    assert len(btc.intraday) == 60 and len(btc.context) == 60
    assert set(INTRADAY_INDICATOR_COLUMNS) <= set(btc.intraday.columns)


def test_funding_is_the_last_settled_rate_and_open_interest_is_reported_missing(
    season: HistoricalMarketData, season_data: dict[str, object]
) -> None:
    at = datetime(2025, 10, 28, 7, 5, tzinfo=UTC)
    btc = season.snapshot_at(at).coins["BTC"]
    funding = season_data["funding"]["BTC"]  # type: ignore[index]
    assert btc.funding_rate == funding.loc["2025-10-28 00:00"]
    assert btc.next_funding_at == datetime(2025, 10, 28, 8, tzinfo=UTC)
    assert btc.open_interest is None and btc.open_interest_avg is None
    assert {"open_interest", "open_interest_avg"} <= btc.missing
    assert "funding_rate" not in btc.missing
    marks = season_data["marks"]["BTC"]  # type: ignore[index]
    assert btc.mark_price == marks.loc["2025-10-28 06:00", "close"]


def test_without_funding_or_marks_those_fields_are_missing_not_zero() -> None:
    md = HistoricalMarketData({"BTC": minute_candles(60)}, intraday_timeframe="3m")
    btc = md.snapshot_at(T0 + timedelta(minutes=30)).coins["BTC"]
    assert btc.funding_rate is None and btc.mark_price is None
    assert btc.missing == {
        "funding_rate",
        "next_funding_at",
        "mark_price",
        "open_interest",
        "open_interest_avg",
    }


@pytest.mark.parametrize(
    "at",
    [
        datetime(2025, 10, 20, 0, 0, tzinfo=UTC),
        datetime(2025, 10, 20, 3, 55, tzinfo=UTC),
        datetime(2025, 10, 20, 4, 0, tzinfo=UTC),
        datetime(2025, 10, 20, 4, 7, 30, tzinfo=UTC),
        datetime(2025, 11, 3, 23, 45, tzinfo=UTC),
    ],
)
def test_a_snapshot_equals_one_built_from_the_history_cut_at_that_time(
    season: HistoricalMarketData, season_data: dict[str, object], at: datetime
) -> None:
    """The no-look-ahead proof for snapshots: drop every candle not closed by `at`, rebuild,
    and the snapshot at `at` is the same, indicators included."""
    candles: dict[str, pd.DataFrame] = season_data["candles"]  # type: ignore[assignment]
    cut = {
        coin: frame[frame.index + pd.Timedelta(minutes=5) <= at] for coin, frame in candles.items()
    }
    truncated = HistoricalMarketData(cut, intraday_timeframe="15m", context_timeframe="4h")
    full_snap, cut_snap = season.snapshot_at(at), truncated.snapshot_at(at)
    for coin in ("BTC", "ETH"):
        full, part = full_snap.coins[coin], cut_snap.coins[coin]
        assert full.last_price == part.last_price
        pd.testing.assert_frame_equal(full.intraday, part.intraday, rtol=1e-12, atol=1e-9)
        pd.testing.assert_frame_equal(full.context, part.context, rtol=1e-12, atol=1e-9)


def test_there_is_no_market_before_the_first_close_or_after_the_data(
    season: HistoricalMarketData,
) -> None:
    with pytest.raises(DataUnavailableError, match="no BTC candle has closed"):
        season.snapshot_at(datetime(2025, 9, 1, 0, 3, tzinfo=UTC))
    with pytest.raises(DataUnavailableError, match="the data ends"):
        season.snapshot_at(datetime(2025, 11, 5, tzinfo=UTC))


def test_candles_between_returns_base_candles_closed_in_the_window(
    season: HistoricalMarketData,
) -> None:
    start = datetime(2025, 10, 28, 7, 0, tzinfo=UTC)
    frame = season.candles_between("BTC", start, start + timedelta(minutes=15))
    assert list(frame.index) == [pd.Timestamp(start) + pd.Timedelta(minutes=m) for m in (0, 5, 10)]
    assert frame["close"].iloc[0] == 114250.0
    partial = season.candles_between("BTC", start, start + timedelta(minutes=7))
    assert len(partial) == 1, "the 07:05 candle has not closed by 07:07"


def test_funding_between_lists_settlements_with_the_mark_open_then(
    season: HistoricalMarketData, season_data: dict[str, object]
) -> None:
    start = datetime(2025, 10, 28, 0, 0, tzinfo=UTC)
    frame = season.funding_between("BTC", start, start + timedelta(hours=16))
    assert list(frame.index) == [
        pd.Timestamp("2025-10-28 08:00", tz="UTC"),
        pd.Timestamp("2025-10-28 16:00", tz="UTC"),
    ]
    marks = season_data["marks"]["BTC"]  # type: ignore[index]
    assert frame["mark_price"].iloc[0] == marks.loc["2025-10-28 08:00", "open"]
    served = asyncio.run(season.funding("BTC", start, start + timedelta(hours=16)))
    assert served["funding_rate"].tolist() == frame["funding_rate"].tolist()


def test_funding_without_mark_data_leaves_the_mark_price_nan(
    season_data: dict[str, object],
) -> None:
    md = HistoricalMarketData(
        season_data["candles"],  # type: ignore[arg-type]
        funding=season_data["funding"],  # type: ignore[arg-type]
        intraday_timeframe="15m",
    )
    start = datetime(2025, 10, 28, 0, 0, tzinfo=UTC)
    frame = asyncio.run(md.funding("ETH", start, start + timedelta(hours=8)))
    assert len(frame) == 1
    assert np.isnan(frame["mark_price"].iloc[0])
    assert md.snapshot_at(start).coins["ETH"].missing >= {"mark_price"}


def test_next_open_is_the_fill_price_of_the_candle_starting_then(
    season: HistoricalMarketData,
) -> None:
    at = datetime(2025, 10, 28, 7, 5, tzinfo=UTC)
    found = season.next_open("BTC", at)
    assert found is not None
    opened_at, price = found
    assert opened_at == at
    assert price == season.candles_between("BTC", at, at + timedelta(minutes=5))["open"].iloc[0]


def test_port_candles_resample_to_the_asked_timeframe(season: HistoricalMarketData) -> None:
    start = datetime(2025, 10, 28, 0, 0, tzinfo=UTC)
    hourly = asyncio.run(season.candles("BTC", "1h", start, start + timedelta(hours=3)))
    base = season.candles_between("BTC", start, start + timedelta(hours=1))
    assert len(hourly) == 3
    assert hourly["high"].iloc[0] == base["high"].max()
    assert hourly["volume"].iloc[0] == pytest.approx(base["volume"].sum())
