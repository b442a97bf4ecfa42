"""A replayed snapshot's candle rows read exactly as the frames they stand for."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from app.candle_checks import snapshot_problems
from app.domain import CandleTable, CoinSnapshot, MarketSnapshot, PrecomputedCoinSnapshot
from app.market import HistoricalMarketData
from app.prompts.builder import render_context_blocks, render_market_section

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def noisy_candles(count: int) -> pd.DataFrame:
    """One-minute candles of a random walk, so every indicator moves."""
    index = pd.date_range(T0, periods=count, freq="1min", tz="UTC", name="open_time")
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(7).normal(0, 0.002, count)))
    open_ = np.concatenate(([100.0], close[:-1]))
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) * 1.001,
            "low": np.minimum(open_, close) * 0.999,
            "close": close,
            "volume": 1.0 + np.arange(count) % 7,
        },
        index=index,
    )


def as_plain(snapshot: MarketSnapshot) -> MarketSnapshot:
    """Return `snapshot` with every coin a plain `CoinSnapshot` of the same frames."""
    coins = {
        coin: CoinSnapshot(
            **{field.name: getattr(data, field.name) for field in dataclasses.fields(data)}
        )
        for coin, data in snapshot.coins.items()
    }
    return dataclasses.replace(snapshot, coins=coins)


@pytest.fixture(scope="module")
def market() -> HistoricalMarketData:
    return HistoricalMarketData(
        {"BTC": noisy_candles(3 * 24 * 60), "ETH": noisy_candles(3 * 24 * 60) * 0.03},
        intraday_timeframe="3m",
        context_timeframe="4h",
    )


@pytest.mark.parametrize("minutes", [0, 7, 61, 239, 240, 241, 24 * 60 + 13])
def test_rows_render_and_check_as_the_frames_do(market: HistoricalMarketData, minutes: int) -> None:
    at = T0 + timedelta(hours=12, minutes=minutes)
    snapshot = market.snapshot_at(at)
    assert all(isinstance(c, PrecomputedCoinSnapshot) for c in snapshot.coins.values())
    plain = as_plain(snapshot)
    assert render_market_section(snapshot) == render_market_section(plain)
    assert render_context_blocks(snapshot) == render_context_blocks(plain)
    # Later clocks make both timeframes stale: the same words either way.
    for late in (timedelta(0), timedelta(minutes=7), timedelta(hours=9)):
        moved, moved_plain = (dataclasses.replace(s, at=at + late) for s in (snapshot, plain))
        assert snapshot_problems(moved, max_price_gap_pct=5.0) == snapshot_problems(
            moved_plain, max_price_gap_pct=5.0
        )


def test_a_forming_candle_in_the_rows_is_cut_as_from_a_frame(market: HistoricalMarketData) -> None:
    """Rows a caller hands over with a candle still open are cut like `_closed_rows` cuts."""
    table = CandleTable(market.snapshot_at(T0 + timedelta(days=2)).coins["BTC"].intraday)
    at = T0 + timedelta(days=2) - timedelta(minutes=4)  # the last two 3m candles still forming
    rows, context = table.rows(3, table.values.shape[0]), table.rows(0, 0)
    coin = PrecomputedCoinSnapshot(
        coin="BTC", symbol="BTC/USDT:USDT", last_price=1.0, intraday_rows=rows, context_rows=context
    )
    snapshot = MarketSnapshot(
        at=at, intraday_timeframe="3m", context_timeframe="4h", coins={"BTC": coin}
    )
    assert render_market_section(snapshot) == render_market_section(as_plain(snapshot))
    assert snapshot_problems(snapshot, max_price_gap_pct=5.0) == snapshot_problems(
        as_plain(snapshot), max_price_gap_pct=5.0
    )


def test_the_frames_are_the_slices_and_pickle_as_a_plain_snapshot(
    market: HistoricalMarketData,
) -> None:
    at = T0 + timedelta(days=1, minutes=30)
    coin = market.snapshot_at(at).coins["ETH"]
    assert isinstance(coin, PrecomputedCoinSnapshot)
    assert coin.intraday is coin.intraday  # built once
    assert len(coin.intraday) == market.tail
    assert coin.intraday.index[-1] == pd.Timestamp(at) - pd.Timedelta(minutes=3)
    copy = pickle.loads(pickle.dumps(coin))
    assert type(copy) is CoinSnapshot
    pd.testing.assert_frame_equal(copy.intraday, coin.intraday)
    pd.testing.assert_frame_equal(copy.context, coin.context)
    assert copy.last_price == coin.last_price and copy.missing == coin.missing
