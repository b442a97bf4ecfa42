"""Market data the daemon and the backtests can trust, where the user meets it.

The daemon runs in-process (`build_live_arena`) with real ccxt against the loopback fake exchange
and the real openai SDK against the fake model server; the backtest runs `arena backtest` on
candle files. Each test damages the data the way a venue or a file can (a wick to 1 % of the
price, candles that stop an hour early, a ticker that disagrees, tickers that fail) and checks
what the books and the records say.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import AgentConfig, Settings, load_settings
from app.db import models
from app.db.session import make_engine
from app.wiring import build_live_arena
from tests.arena_cli import arena
from tests.fakes.exchange import FakeExchange, synthetic_candles
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.traders import by_model, trend_trader

# The fake exchange's clock stands still here; the cycles are a few hours before it.
EXCHANGE_NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
CYCLE = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
HODL = "hodl=baseline:buy_and_hold"
TREND = f"trend=modelscope:{MODEL}"


def clean_candles(days: int = 3) -> dict[str, pd.DataFrame]:
    return synthetic_candles(
        start=EXCHANGE_NOW - timedelta(days=days), end=EXCHANGE_NOW + timedelta(hours=1)
    )


def with_wicks(
    candles: dict[str, pd.DataFrame], minutes: list[datetime]
) -> dict[str, pd.DataFrame]:
    """Return the candles with each coin's low at 1 % of its close at `minutes` (open, high,
    close and so every ticker untouched), as in the fault run that emptied an account."""
    out = {}
    for coin, frame in candles.items():
        frame = frame.copy()
        at = pd.DatetimeIndex(minutes)
        frame.loc[at, "low"] = frame.loc[at, "close"] * 0.01
        out[coin] = frame
    return out


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer("modelscope", responder=by_model({MODEL: trend_trader})) as server:
        yield server


def settings_for(
    monkeypatch: pytest.MonkeyPatch,
    exchange: FakeExchange,
    llm: FakeOpenAIServer,
    database: Path,
    **extra: str,
) -> Settings:
    env = {
        "EXCHANGE_ID": "binanceusdm",
        "EXCHANGE_API_URL": exchange.url,
        "EXCHANGE_TIMEOUT_S": "60",
        "DATABASE_URL": f"sqlite:///{database}",
        "MODELSCOPE_API_KEY": "ms-test-not-a-real-key",
        "MODELSCOPE_BASE_URL": llm.base_url,
        "LLM_MAX_RETRIES": "0",
        **extra,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(env_file=None)


def cycle_rows(database: Path) -> list[tuple[str, str, str | None]]:
    engine = make_engine(f"sqlite:///{database}")
    with Session(engine) as session:
        rows = session.execute(
            select(models.Agent.name, models.Cycle.status, models.Cycle.error)
            .join(models.Agent, models.Agent.id == models.Cycle.agent_id)
            .order_by(models.Cycle.id)
        ).all()
    return [(name, status, error) for name, status, error in rows]


def fills(database: Path) -> list[tuple[str, str]]:
    engine = make_engine(f"sqlite:///{database}")
    with Session(engine) as session:
        return [
            (coin, reason)
            for coin, reason in session.execute(
                select(models.Fill.coin, models.Fill.reason).order_by(models.Fill.id)
            ).all()
        ]


# -- point 1: implausible candles ----------------------------------------------------------------


def test_a_wick_to_one_percent_of_the_price_stops_out_nobody(
    llm: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """buy_and_hold opens six longs at 09:00 with stops at 2 % of the entry price. The exchange
    then serves two one-minute candles (09:01 and 09:02) whose low is 1 % of the close, open,
    high, close and ticker being right. The exit monitor at 09:06 closes nothing (before the
    check it stopped out all six at the wick), and the 09:06 cycle, whose 09:00 three-minute
    candle holds the wicks, is decided on the other candles and says in its record what was
    dropped."""
    wicks = [CYCLE + timedelta(minutes=1), CYCLE + timedelta(minutes=2)]
    database = tmp_path / "arena.db"
    with FakeExchange(with_wicks(clean_candles(), wicks), now=EXCHANGE_NOW) as exchange:
        settings = settings_for(monkeypatch, exchange, llm, database)

        async def run() -> int:
            async with build_live_arena(settings, [AgentConfig.from_spec(HODL)]) as live:
                await live.run_once(CYCLE)
                exits = await live.engine.run_monitor(CYCLE + timedelta(minutes=6))
                await live.run_once(CYCLE + timedelta(minutes=6))
                return exits

        exits = asyncio.run(run())

    assert exits == 0
    assert [reason for _, reason in fills(database)] == ["entry"] * 6
    rows = cycle_rows(database)
    assert [status for _, status, _ in rows] == ["ok", "ok"]
    assert rows[0][2] is None
    note = rows[1][2] or ""
    assert "1 implausible binanceusdm BTC 3m candle dropped" in note
    assert "2026-01-15 09:00 UTC: low" in note


def write_candle_files(folder: Path, candles: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir()
    for coin, frame in candles.items():
        five = (
            frame.resample("5min", label="left", closed="left")
            .agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
            .dropna()
        )
        five.index.name = "open_time"
        five.to_csv(folder / f"{coin}_USDT-5m.csv")
    return folder


def hodl_backtest(data: Path, tmp_path: Path, name: str) -> tuple[dict[str, object], str]:
    result = arena(
        "backtest",
        "--data",
        str(data),
        "--start",
        "2026-01-12T12:00:00+00:00",
        "--end",
        "2026-01-15T12:00:00+00:00",
        "--interval",
        "1h",
        "--agent",
        HODL,
        "--json",
        env={"DATABASE_URL": f"sqlite:///{tmp_path / name}.db"},
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    (agent,) = summary["agents"]
    return agent, result.stderr


def test_a_wick_in_a_candle_file_changes_no_backtest_result(tmp_path: Path) -> None:
    """Three days of five-minute candle files, replayed hourly by buy_and_hold: once clean, once
    with one candle of every coin whose low is 1 % of its close (on 2026-01-13 at 10:05). The two
    runs end with the same account value and no trade closed, and the run on the damaged files
    says which candles it dropped. (Before the check the wick stopped out all six longs.) The
    files start 12 days earlier, so the 4h indicators are warm at the first cycle."""
    candles = clean_candles(days=15)
    clean = write_candle_files(tmp_path / "clean", candles)
    wick_at = datetime(2026, 1, 13, 10, 5, tzinfo=UTC)
    damaged_candles = {}
    for coin, frame in candles.items():
        frame = frame.copy()
        minutes = pd.date_range(wick_at, periods=5, freq="1min")
        frame.loc[minutes, "low"] = frame.loc[minutes, "close"] * 0.01
        damaged_candles[coin] = frame
    damaged = write_candle_files(tmp_path / "damaged", damaged_candles)

    clean_agent, _ = hodl_backtest(clean, tmp_path, "clean")
    damaged_agent, stderr = hodl_backtest(damaged, tmp_path, "damaged")

    assert damaged_agent["trades"] == clean_agent["trades"] == 0
    assert damaged_agent["final_equity"] == pytest.approx(clean_agent["final_equity"], rel=1e-9)
    assert "1 implausible BTC 5m candle dropped (2026-01-13 10:05 UTC: low" in stderr


# -- point 2: stale or contradictory data ------------------------------------------------------


def test_candles_that_end_an_hour_early_skip_the_cycle_without_asking_the_model(
    llm: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange's candles stop at 08:00 while its clock says 12:00, so the 09:00 cycle's
    newest closed 3m candle closed an hour before it. Both agents' cycles are recorded
    `skipped` with that reason; the model is not asked and nothing fills."""
    candles = {
        coin: frame[frame.index < CYCLE - timedelta(hours=1)]
        for coin, frame in clean_candles().items()
    }
    database = tmp_path / "arena.db"
    with FakeExchange(candles, now=EXCHANGE_NOW) as exchange:
        settings = settings_for(monkeypatch, exchange, llm, database)
        agents = [AgentConfig.from_spec(HODL), AgentConfig.from_spec(TREND)]

        async def run() -> None:
            async with build_live_arena(settings, agents) as live:
                await live.run_once(CYCLE)

        asyncio.run(run())

    assert llm.request_count == 0
    assert fills(database) == []
    rows = cycle_rows(database)
    assert sorted(name for name, _, _ in rows) == ["hodl", "trend"]
    for _, status, error in rows:
        assert status == "skipped"
        assert error is not None
        assert "BTC 3m data is stale: the newest closed candle opened 2026-01-15 07:57 UTC" in error
        assert "closed 60 min before the cycle" in error


def _binance_ticker(price: float) -> dict[str, object]:
    return {
        "symbol": "BTCUSDT",
        "lastPrice": f"{price:.2f}",
        "openPrice": f"{price:.2f}",
        "highPrice": f"{price:.2f}",
        "lowPrice": f"{price:.2f}",
        "volume": "1",
        "quoteVolume": "1",
        "openTime": 0,
        "closeTime": 0,
    }


def test_a_ticker_that_disagrees_with_the_candles_skips_the_cycle(
    llm: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle of the present (the exchange's clock and the feed's are both at 09:00:10): the
    ticker says BTC is 20 % above the newest 3m close, beyond EXCHANGE_MAX_PRICE_GAP_PCT (5).
    The cycle is skipped with both prices in the reason; nothing fills."""
    candles = {"BTC": clean_candles()["BTC"]}
    database = tmp_path / "arena.db"
    now = CYCLE + timedelta(seconds=10)
    with FakeExchange(candles, now=now) as exchange:
        close = float(candles["BTC"].loc[CYCLE - timedelta(minutes=1), "close"])
        exchange.respond("/fapi/v1/ticker/24hr", _binance_ticker(close * 1.2))
        settings = settings_for(monkeypatch, exchange, llm, database, SYMBOLS="BTC")

        async def run() -> None:
            async with build_live_arena(
                settings, [AgentConfig.from_spec(HODL)], feed_clock=lambda: now
            ) as live:
                await live.engine.run_cycle(CYCLE)

        asyncio.run(run())

    assert fills(database) == []
    ((_, status, error),) = cycle_rows(database)
    assert status == "skipped"
    assert error is not None and "BTC ticker" in error and "disagree by 20.0 %" in error


def test_tickers_failing_when_the_answer_is_ready_fill_nothing_at_an_older_price(
    llm: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle of the present whose tickers all fail (HTTP 500, after ccxt's retries): the
    snapshot's price is the last 3m close, and when buy_and_hold's order is ready the current
    price cannot be had either. The order is rejected with that reason instead of filling at the
    snapshot's close (which it did, with only a log warning)."""
    candles = {"BTC": clean_candles()["BTC"]}
    database = tmp_path / "arena.db"
    now = CYCLE + timedelta(seconds=10)
    with FakeExchange(candles, now=now) as exchange:
        exchange.fail("/fapi/v1/ticker", "500")
        settings = settings_for(monkeypatch, exchange, llm, database, SYMBOLS="BTC")

        async def run() -> None:
            async with build_live_arena(
                settings, [AgentConfig.from_spec(HODL)], feed_clock=lambda: now
            ) as live:
                await live.engine.run_cycle(CYCLE)

        asyncio.run(run())

    assert fills(database) == []
    engine = make_engine(f"sqlite:///{database}")
    with Session(engine) as session:
        outcomes = session.execute(select(models.Decision.outcome, models.Decision.reason)).all()
    assert [tuple(row) for row in outcomes] == [
        ("rejected", "no current price to fill at this cycle")
    ]


# -- point 3: the exchange at start, the exit checks, one bulk request, exact coins ---------------


def test_an_exchange_unreachable_at_start_is_waited_for(
    llm: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange answers its first three market requests with HTTP 500 (Binance's -1000
    "unknown error"). `arena run --once` waits and tries again (after 0.5, 1 and 2 s; the
    EXCHANGE_STARTUP_RETRY_S default is 300 s) instead of exiting 1, and runs its cycle."""
    database = tmp_path / "arena.db"
    with FakeExchange(clean_candles(), now=EXCHANGE_NOW) as exchange:
        exchange.fail("/fapi/v1/exchangeInfo", "500", times=3)
        settings_for(monkeypatch, exchange, llm, database)
        result = arena("run", "--once", "--at", CYCLE.isoformat(), "--agent", HODL)
        tries = len(exchange.requests_to("/fapi/v1/exchangeInfo"))
    assert result.exit_code == 0, result.stderr
    assert tries == 4
    assert [status for _, status, _ in cycle_rows(database)] == ["ok"]


def test_markets_not_loaded_within_the_startup_time_fail_with_the_reason() -> None:
    """With EXCHANGE_STARTUP_RETRY_S = 10 and a first pause of 0.5 s, the pauses double up to
    what is left: 0.5 + 1 + 2 + 4 + 2.5 = 10 s, then the exchange's error is raised."""
    from app.errors import TemporaryError
    from app.market.ccxt_feed import CcxtMarketData

    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    with FakeExchange(clean_candles(), now=EXCHANGE_NOW) as exchange:
        exchange.fail("/fapi/v1/exchangeInfo", "500")
        feed = CcxtMarketData(
            coins=["BTC"],
            exchange_id="binanceusdm",
            api_url=exchange.url,
            max_retries=0,
            retry_backoff_s=0.5,
            startup_retry_s=10.0,
            sleep=sleep,
        )

        async def start() -> None:
            try:
                await feed.load_markets()
            finally:
                await feed.close()

        with pytest.raises(TemporaryError, match="binanceusdm load_markets"):
            asyncio.run(start())
    assert pauses == [0.5, 1.0, 2.0, 4.0, 2.5]


def test_exit_checks_fetch_each_coin_once_for_all_agents_at_once(
    llm: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twelve buy_and_hold agents hold the same six coins. One exit-monitor pass asks the
    exchange for each coin's one-minute candles and funding once (6 + 6 requests, not 72 + 72)
    and all at once: the fake exchange holds every request until six are in flight together
    (a sequential monitor never gets there; the gate then gives up after 5 s)."""
    agents = [AgentConfig.from_spec(f"hodl{i}=baseline:buy_and_hold") for i in range(12)]
    database = tmp_path / "arena.db"
    with FakeExchange(clean_candles(), now=EXCHANGE_NOW) as exchange:
        settings = settings_for(monkeypatch, exchange, llm, database)

        async def run() -> int:
            async with build_live_arena(settings, agents) as live:
                await live.run_once(CYCLE)
                exchange.reset()
                exchange.hold_until_in_flight(6, limit_s=5.0)
                return await live.engine.run_monitor(CYCLE + timedelta(minutes=2))

        exits = asyncio.run(run())
        klines = exchange.requests_to("/fapi/v1/klines")
        funding = exchange.requests_to("/fapi/v1/fundingRate")
        most_at_once = exchange.max_in_flight
    assert exits == 0
    assert len(fills(database)) == 12 * 6
    assert sorted(request.query["symbol"] for request in klines) == sorted(
        f"{coin}USDT" for coin in ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
    )
    assert len(funding) == 6
    assert most_at_once >= 6


def _exchange_info_with(exchange: FakeExchange, *extra: dict[str, object]) -> dict[str, object]:
    import copy

    from tests.fakes.exchange import _Binance

    info = _Binance(exchange).exchange_info()
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    added = []
    for changes in extra:
        market = copy.deepcopy(btc)
        market.update(changes)
        added.append(market)
    return {**info, "symbols": [*info["symbols"], *added]}


def test_a_look_alike_market_is_never_read_as_the_coin() -> None:
    """The exchange lists, after the real BTCUSDT, a perpetual `BTCUSD_FAKE` whose base asset is
    BTC (ccxt files it under BTC/USDT:USDT, hiding BTCUSDT) and `1000BTCUSDT` (base 1000BTC).
    BTC is not read from either: the start fails naming the look-alike. Without the look-alike,
    BTC is BTCUSDT, whatever 1000BTC does."""
    from app.errors import ConfigError
    from app.market.ccxt_feed import CcxtMarketData

    async def markets(exchange: FakeExchange) -> dict[str, str]:
        feed = CcxtMarketData(coins=["BTC"], exchange_id="binanceusdm", api_url=exchange.url)
        try:
            symbols = await feed.load_markets()
            return {coin: feed.exchange.markets[s]["id"] for coin, s in symbols.items()}
        finally:
            await feed.close()

    fake_btc = {"symbol": "BTCUSD_FAKE", "pair": "BTCUSD_FAKE"}
    thousand = {"symbol": "1000BTCUSDT", "pair": "1000BTCUSDT", "baseAsset": "1000BTC"}
    with FakeExchange(clean_candles(), now=EXCHANGE_NOW) as exchange:
        exchange.respond("/fapi/v1/exchangeInfo", _exchange_info_with(exchange, fake_btc, thousand))
        with pytest.raises(ConfigError, match="BTC/USDT:USDT is BTCUSD_FAKE"):
            asyncio.run(markets(exchange))
        exchange.reset()
        exchange.respond("/fapi/v1/exchangeInfo", _exchange_info_with(exchange, thousand))
        assert asyncio.run(markets(exchange)) == {"BTC": "BTCUSDT"}
