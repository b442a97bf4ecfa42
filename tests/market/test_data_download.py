"""`arena data download`: pages candles into the candle table; a second run fetches nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from app.db.candles import CandleCache
from app.db.session import make_engine
from tests.arena_cli import arena
from tests.fakes.exchange import FakeExchange, synthetic_candles

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[FakeExchange]:
    candles = synthetic_candles(("BTC", "ETH"), start=NOW - timedelta(days=2), end=NOW)
    with FakeExchange(candles, now=NOW) as server:
        yield server


@pytest.fixture
def env(fake: FakeExchange, db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("EXCHANGE_ID", "binanceusdm")
    monkeypatch.setenv("EXCHANGE_API_URL", fake.url)
    monkeypatch.setenv("DATABASE_URL", db_url)
    return db_url


ARGS = [
    "data",
    "download",
    "--symbols",
    "BTC,ETH",
    "--timeframe",
    "1m",
    "--since",
    "2026-01-14T00:00:00Z",
    "--until",
    "2026-01-15",
    "--json",
]


def test_download_pages_a_day_of_minutes_into_the_cache_and_a_rerun_fetches_nothing(
    fake: FakeExchange, env: str
) -> None:
    """One day of 1m candles is 1440 per coin; at 500 per page that is 3 requests per coin."""
    first = arena(*ARGS)
    assert first.exit_code == 0, first.stderr
    summary = json.loads(first.stdout)
    assert [(r["symbol"], r["fetched"], r["expected"]) for r in summary] == [
        ("BTC/USDT:USDT", 1440, 1440),
        ("ETH/USDT:USDT", 1440, 1440),
    ]
    assert len(fake.requests_to("/fapi/v1/klines")) == 6
    cache = CandleCache(make_engine(env))
    source = f"binanceusdm@{fake.url.split('://')[1]}"
    assert cache.count(exchange=source, symbol="BTC/USDT:USDT", timeframe="1m") == 1440

    fake.reset()
    again = arena(*ARGS)
    assert again.exit_code == 0, again.stderr
    assert [r["cached_before"] for r in json.loads(again.stdout)] == [1440, 1440]
    assert fake.requests_to("/fapi/v1/klines") == []


def test_a_bad_date_exits_2_with_the_option_named(env: str) -> None:
    result = arena("data", "download", "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since 'yesterday' is not an ISO 8601 date" in result.stderr
