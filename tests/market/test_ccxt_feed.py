"""CcxtMarketData: real ccxt against the fake exchange on loopback; errors become app errors."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import pytest

from app.db.candles import CandleCache
from app.db.migrate import upgrade
from app.db.session import make_engine
from app.errors import ConfigError, RateLimitedError, TemporaryError
from app.market.ccxt_feed import CcxtMarketData, build_exchange, replace_api_host
from app.ports import MarketData
from app.prompts.builder import render_market_section
from tests.conftest import shared_data
from tests.fakes.exchange import FakeExchange, synthetic_candles

T = TypeVar("T")
COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
# The fake exchange's clock: mid-candle, so a 3m candle (12:06) is still forming.
NOW = datetime(2026, 1, 15, 12, 7, 30, tzinfo=UTC)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    return synthetic_candles(COINS, start=NOW - timedelta(days=36), end=NOW + timedelta(hours=2))


@pytest.fixture(scope="module")
def server(candles: dict[str, pd.DataFrame]) -> Iterator[FakeExchange]:
    # A "timeout" holds its request until the next test's reset: far beyond any client's wait.
    fake = FakeExchange(candles, now=NOW, timeout_s=600.0)
    with fake:
        yield fake


@pytest.fixture
def fake(server: FakeExchange) -> FakeExchange:
    server.reset()
    server.now = NOW
    return server


def make_feed(fake: FakeExchange, **options: Any) -> CcxtMarketData:
    settings: dict[str, Any] = {
        "coins": COINS,
        "exchange_id": "binanceusdm",
        "api_url": fake.url,
        "retry_backoff_s": 0.01,
        "timeout_s": 30.0,
        # The fake exchange's clock, not the machine's: its market is of a fixed past day.
        "clock": lambda: fake.now or NOW,
    }
    settings.update(options)
    config = settings.pop("exchange_config", {})
    return CcxtMarketData(**settings, exchange_config={"timeout_on_exit": 0, **config})


async def snapshot_once(feed: CcxtMarketData, at: datetime = NOW) -> Any:
    try:
        return await feed.snapshot(at)
    finally:
        await feed.close()


def test_snapshot_turns_exchange_payloads_into_closed_candles_indicators_and_extras(
    fake: FakeExchange, candles: dict[str, pd.DataFrame]
) -> None:
    """At 12:07:30 the 3m candle of 12:06 is forming, so the newest closed one opened at 12:03
    (its close is the close of the 12:05 minute); the 4h candle of 12:00 is forming, so the
    newest closed one opened at 08:00."""
    feed = make_feed(fake)
    assert isinstance(feed, MarketData)
    snap = run(snapshot_once(feed))
    btc = snap.coins["BTC"]
    minute = candles["BTC"]
    assert btc.symbol == "BTC/USDT:USDT"
    assert btc.intraday.index[-1] == pd.Timestamp("2026-01-15 12:03", tz="UTC")
    assert btc.intraday["close"].iloc[-1] == pytest.approx(minute.loc["2026-01-15 12:05", "close"])
    assert btc.intraday["high"].iloc[-1] == pytest.approx(
        minute.loc["2026-01-15 12:03":"2026-01-15 12:05", "high"].max()
    )
    assert btc.context.index[-1] == pd.Timestamp("2026-01-15 08:00", tz="UTC")
    assert len(btc.intraday) == 60 and len(btc.context) == 60
    assert btc.intraday[["ema20", "macd_signal", "rsi7", "rsi14"]].iloc[-1].notna().all()
    assert btc.context[["ema50", "atr3", "atr14", "volume_avg"]].iloc[-1].notna().all()
    assert btc.last_price == pytest.approx(minute.loc["2026-01-15 12:07", "close"])
    assert btc.funding_rate == 0.0001
    assert btc.next_funding_at == datetime(2026, 1, 15, 16, tzinfo=UTC)
    assert btc.open_interest == 12345.0
    # The fake's history: 12345 * (1 + 0.001 * (i % 7)) for i in 0..29; the mean is 12345 * 1.00296.
    expected_avg = sum(12345.0 * (1 + 0.001 * (i % 7)) for i in range(30)) / 30
    assert btc.open_interest_avg == pytest.approx(expected_avg)
    assert btc.missing == frozenset()
    assert btc.rules is not None
    assert (btc.rules.amount_step, btc.rules.price_step, btc.rules.min_notional_usd) == (
        0.001,
        0.1,
        100.0,
    )
    klines = fake.requests_to("/fapi/v1/klines")
    assert {(r.query["symbol"], r.query["interval"]) for r in klines} >= {
        ("BTCUSDT", "3m"),
        ("DOGEUSDT", "4h"),
    }


def test_snapshot_of_a_past_time_uses_no_current_values(
    fake: FakeExchange, candles: dict[str, pd.DataFrame]
) -> None:
    """A cycle replayed for 09:00 while the exchange's clock says 12:07:30 must not see the
    12:07 ticker, funding or open interest: the price is the close of the last 3m candle closed
    by 09:00 (the one opened at 08:57, whose last minute is 08:59), and the rest is missing."""
    feed = make_feed(fake)
    past = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    fake.reset()
    snap = run(snapshot_once(feed, past))
    btc = snap.coins["BTC"]
    assert btc.last_price == pytest.approx(candles["BTC"].loc["2026-01-15 08:59", "close"])
    assert btc.intraday.index[-1] == pd.Timestamp("2026-01-15 08:57", tz="UTC")
    assert btc.funding_rate is None and btc.open_interest is None
    assert {"funding_rate", "open_interest"} <= btc.missing
    for path in ("/fapi/v1/ticker/24hr", "/fapi/v1/premiumIndex", "/fapi/v1/openInterest"):
        assert fake.requests_to(path) == [], f"{path} was asked for a past snapshot"


def test_current_prices_are_the_tickers_last_trades(
    fake: FakeExchange, candles: dict[str, pd.DataFrame]
) -> None:
    """At 12:07:30 the fake's last trade is the close of the 12:07 minute (still forming)."""
    feed = make_feed(fake)

    async def prices() -> dict[str, float]:
        try:
            return await feed.current_prices()
        finally:
            await feed.close()

    found = run(prices())
    assert set(found) == set(COINS)
    assert found["BTC"] == pytest.approx(candles["BTC"].loc["2026-01-15 12:07", "close"])


def test_every_request_of_a_snapshot_is_in_flight_at_once(fake: FakeExchange) -> None:
    """36 requests (2 candle series, ticker, funding, open interest and its history per coin),
    each held by the exchange until 30 of them are in flight: served one by one they would
    never overlap, and the gate would give up after 30 s."""
    feed = make_feed(fake, timeout_s=60.0)

    async def scenario() -> None:
        try:
            await feed.load_markets()
            fake.hold_until_in_flight(30)
            await feed.snapshot(NOW)
        finally:
            await feed.close()

    run(scenario())
    assert len(fake.requests) == 37
    assert fake.max_in_flight >= 30


def test_a_method_the_exchange_lacks_is_reported_missing_and_the_prompt_says_not_available(
    fake: FakeExchange,
) -> None:
    feed = make_feed(
        fake,
        exchange_config={
            "has": {
                "fetchOpenInterest": False,
                "fetchOpenInterestHistory": False,
                "fetchFundingRate": False,
                "fetchFundingRates": False,
            }
        },
    )
    snap = run(snapshot_once(feed))
    btc = snap.coins["BTC"]
    assert btc.open_interest is None and btc.funding_rate is None
    assert {"open_interest", "open_interest_avg", "funding_rate", "next_funding_at"} <= btc.missing
    assert not fake.requests_to("/fapi/v1/openInterest")
    assert not fake.requests_to("/fapi/v1/premiumIndex")
    text = render_market_section(snap)
    assert "Funding Rate: not available" in text
    assert "not available" in text.split("Open Interest")[1].splitlines()[0]
    assert "Funding Rate: 0\n" not in text


def test_a_429_is_retried_with_backoff_and_the_snapshot_succeeds(fake: FakeExchange) -> None:
    fake.fail("/fapi/v1/klines", "429", times=2)
    snap = run(snapshot_once(make_feed(fake)))
    assert len(snap.coins) == 6
    assert len(fake.requests_to("/fapi/v1/klines")) == 12 + 2


def test_a_persistent_429_raises_rate_limited_error(fake: FakeExchange) -> None:
    fake.fail("/fapi/v1/klines", "429")
    with pytest.raises(RateLimitedError, match="rate limited") as caught:
        run(snapshot_once(make_feed(fake, max_retries=1)))
    assert type(caught.value.__cause__).__module__.startswith("ccxt")


def test_a_timeout_raises_temporary_error(fake: FakeExchange) -> None:
    fake.fail("/fapi/v1/klines", "timeout")
    with pytest.raises(TemporaryError, match="no answer in time") as caught:
        run(snapshot_once(make_feed(fake, max_retries=0, timeout_s=0.3)))
    assert not isinstance(caught.value, RateLimitedError)


def test_a_malformed_payload_raises_temporary_error(fake: FakeExchange) -> None:
    """ccxt turns a truncated JSON body into rows of None; the feed refuses them."""
    fake.fail("/fapi/v1/klines", "malformed")
    with pytest.raises(TemporaryError, match="malformed"):
        run(snapshot_once(make_feed(fake)))


def test_failing_optional_data_is_reported_missing_instead_of_failing_the_cycle(
    fake: FakeExchange,
) -> None:
    fake.fail("/fapi/v1/openInterest", "500")
    snap = run(snapshot_once(make_feed(fake, max_retries=1)))
    btc = snap.coins["BTC"]
    assert btc.open_interest is None
    assert "open_interest" in btc.missing
    assert btc.open_interest_avg is not None, "the history endpoint still answered"


def test_the_next_cycle_fetches_only_the_candle_that_closed_since(fake: FakeExchange) -> None:
    feed = make_feed(fake)

    async def scenario() -> list[Any]:
        try:
            first = await feed.snapshot(NOW)
            before = len(fake.requests_to("/fapi/v1/klines"))
            fake.now = NOW + timedelta(minutes=3)
            second = await feed.snapshot(NOW + timedelta(minutes=3))
            return [first, second, fake.requests_to("/fapi/v1/klines")[before:]]
        finally:
            await feed.close()

    first, second, later = run(scenario())
    assert {(r.query["interval"], r.query["limit"]) for r in later} == {("3m", "1")}
    assert len(later) == 6
    assert second.coins["BTC"].intraday.index[-1] == pd.Timestamp("2026-01-15 12:06", tz="UTC")
    pd.testing.assert_frame_equal(
        second.coins["BTC"].intraday[["open", "close"]].iloc[:-1],
        first.coins["BTC"].intraday[["open", "close"]].iloc[1:],
    )


def test_the_candle_cache_spares_a_restarted_feed_every_candle_request(
    fake: FakeExchange, db_url: str
) -> None:
    upgrade(db_url)
    cache = CandleCache(make_engine(db_url))
    feed = make_feed(fake, cache=cache)
    run(snapshot_once(feed))
    # Candles from a replaced API host are kept under that host, never as the real exchange's.
    assert feed.cache_source == f"binanceusdm@{fake.url.split('://')[1]}"
    assert cache.count(exchange="binanceusdm", symbol="BTC/USDT:USDT", timeframe="3m") == 0
    assert cache.count(exchange=feed.cache_source, symbol="BTC/USDT:USDT", timeframe="3m") == 200
    fake.reset()
    restarted = run(snapshot_once(make_feed(fake, cache=CandleCache(make_engine(db_url)))))
    assert fake.requests_to("/fapi/v1/klines") == []
    assert restarted.coins["ETH"].intraday.index[-1] == pd.Timestamp("2026-01-15 12:03", tz="UTC")


def test_a_candle_closed_moments_ago_is_shown_but_not_cached_in_case_clocks_differ(
    fake: FakeExchange, db_url: str
) -> None:
    """At 12:06:05 the 12:03 candle closed 5 s ago, within the 10 s grace: if the exchange's
    clock were behind ours it could still be forming, so it is refetched until it settles."""
    upgrade(db_url)
    cache = CandleCache(make_engine(db_url))
    at = datetime(2026, 1, 15, 12, 6, 5, tzinfo=UTC)
    fake.now = at
    feed = make_feed(fake, cache=cache)
    snap = run(snapshot_once(feed, at))
    assert snap.coins["BTC"].intraday.index[-1] == pd.Timestamp("2026-01-15 12:03", tz="UTC")
    assert cache.count(exchange=feed.cache_source, symbol="BTC/USDT:USDT", timeframe="3m") == 199


def test_hyperliquid_snapshot_uses_one_bulk_request_per_kind(fake: FakeExchange) -> None:
    """Tickers, funding rates and open interest all come from `metaAndAssetCtxs` on
    Hyperliquid: the snapshot asks it once (it asked three times), besides the market load."""
    feed = make_feed(fake, exchange_id="hyperliquid")
    snap = run(snapshot_once(feed))
    btc = snap.coins["BTC"]
    assert btc.symbol == "BTC/USDC:USDC"
    assert btc.intraday.index[-1] == pd.Timestamp("2026-01-15 12:03", tz="UTC")
    assert btc.funding_rate == 0.0001
    assert btc.open_interest == 12345.0
    assert btc.missing == {"open_interest_avg"}, "Hyperliquid has no open-interest history"
    assert len(fake.requests_to("/info:candleSnapshot")) == 12
    assert len(fake.requests_to("/info:metaAndAssetCtxs")) == 1 + 1


def test_funding_history_gives_settlements_with_their_mark_price(fake: FakeExchange) -> None:
    feed = make_feed(fake)

    async def scenario() -> pd.DataFrame:
        try:
            return await feed.funding("BTC", datetime(2026, 1, 14, tzinfo=UTC), NOW)
        finally:
            await feed.close()

    frame = run(scenario())
    assert list(frame.index) == [
        pd.Timestamp(t, tz="UTC")
        for t in ("2026-01-14 08:00", "2026-01-14 16:00", "2026-01-15 00:00", "2026-01-15 08:00")
    ]
    assert (frame["funding_rate"] == 0.0001).all()
    assert frame["mark_price"].notna().all()


def test_candles_for_the_exit_monitor_are_the_closed_ones_in_the_window(fake: FakeExchange) -> None:
    feed = make_feed(fake)

    async def scenario() -> pd.DataFrame:
        try:
            return await feed.candles("SOL", "1m", NOW - timedelta(minutes=5), NOW)
        finally:
            await feed.close()

    frame = run(scenario())
    assert list(frame.index) == [
        pd.Timestamp("2026-01-15 12:02:30", tz="UTC").ceil("1min") + pd.Timedelta(minutes=m)
        for m in range(4)
    ]


def test_a_coin_the_exchange_does_not_list_is_a_config_error(fake: FakeExchange) -> None:
    with pytest.raises(ConfigError, match="no linear perpetual for PEPE settled in USDT"):
        run(snapshot_once(make_feed(fake, coins=("BTC", "PEPE"))))


def test_recorded_binance_perpetual_candles_parse_through_the_feed(fake: FakeExchange) -> None:
    """ccxt-static's binance "swap ohlcv" recording, served as is: the feed's candles equal
    ccxt's recorded parsedResponse."""
    recording = json.loads(Path(shared_data("ccxt-static", "response", "binance.json")).read_text())
    case = next(c for c in recording["methods"]["fetchOHLCV"] if c["input"][0] == "BTC/USDT:USDT")
    fake.respond("/fapi/v1/klines", case["httpResponse"])
    feed = make_feed(fake)
    first_ms = case["parsedResponse"][0][0]
    start = datetime.fromtimestamp(first_ms / 1000, tz=UTC)

    async def scenario() -> pd.DataFrame:
        try:
            return await feed.candles("BTC", "1m", start, start + timedelta(minutes=3))
        finally:
            await feed.close()

    frame = run(scenario())
    expected = [row[1:] for row in case["parsedResponse"]]
    assert frame.to_numpy().tolist() == expected
    assert [int(t.timestamp() * 1000) for t in frame.index] == [
        row[0] for row in case["parsedResponse"]
    ]


def test_api_url_replaces_scheme_and_host_of_every_rest_url() -> None:
    exchange = build_exchange("binanceusdm", api_url="http://127.0.0.1:9999/", burst_tokens=None)
    urls = exchange.urls["api"]
    assert urls["fapiPublic"] == "http://127.0.0.1:9999/fapi/v1"
    assert urls["fapiData"] == "http://127.0.0.1:9999/futures/data"
    assert all(
        url.startswith("http://127.0.0.1:9999/") for url in urls.values() if isinstance(url, str)
    )
    assert replace_api_host({"public": "https://api.{hostname}/info"}, "http://h:1") == {
        "public": "http://h:1/info"
    }


def walk_urls(urls: Any) -> list[str]:
    if isinstance(urls, str):
        return [urls]
    if isinstance(urls, dict):
        return [url for value in urls.values() for url in walk_urls(value)]
    return []


@pytest.mark.parametrize("exchange_id", ["hyperliquid", "binanceusdm", "okx", "bybit"])
def test_every_supported_exchange_is_pointed_entirely_at_the_api_url(exchange_id: str) -> None:
    exchange = build_exchange(exchange_id, api_url="http://127.0.0.1:9999", burst_tokens=None)
    urls = walk_urls(exchange.urls["api"])
    assert urls
    assert all(url.startswith("http://127.0.0.1:9999") for url in urls), urls
    assert exchange.enableRateLimit


def test_sandbox_switches_to_the_testnet_urls_or_says_there_is_none() -> None:
    testnet = build_exchange("binanceusdm", sandbox=True, burst_tokens=None)
    assert "testnet" in testnet.urls["api"]["fapiPublic"]
    with pytest.raises(ConfigError, match="no sandbox"):
        build_exchange("coincheck", sandbox=True, burst_tokens=None)


def test_an_unknown_exchange_id_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match="did you mean binanceusdm"):
        build_exchange("binanceusdn")
