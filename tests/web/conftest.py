"""The dashboard's test database: a real short backtest (two fake LLM agents, one of them shown
chart images, and the baselines) replayed from the candle cache, built once per session."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.backtest import BacktestOptions, BacktestResult
from app.config import AgentConfig, DatabaseSettings, ProviderSettings, Settings, load_settings
from app.db.candles import CandleCache
from app.web.app import create_app
from app.web.readmodel import ReadModel, open_read_engine
from app.wiring import open_database, run_backtest
from tests.fakes.candles import T0, six_coin_market
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.traders import by_model, contrarian_trader, trend_trader

TREND_MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
CONTRA_MODEL = "Qwen/Qwen3-Next-80B-A3B-Instruct"
COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
EXCHANGE = "binanceusdm"
# Eleven days of 5-minute candles: nine warm the 4h indicators up, the last day and a half is
# replayed every 15 minutes.
PERIODS = 11 * 288
START = T0 + timedelta(days=9, hours=12)
END = T0 + timedelta(days=10, hours=23)


@dataclass(frozen=True)
class Arena:
    """The session's backtest: where its database is and what it printed."""

    url: str
    path: Path
    result: BacktestResult
    settings: Settings


def arena_settings(url: str, llm_url: str | None = None) -> Settings:
    return load_settings(
        env_file=None,
        database=DatabaseSettings(url=url),
        modelscope=ProviderSettings(api_key="ms-test-not-a-real-key", base_url=llm_url),
    )


@pytest.fixture(scope="session")
def arena(tmp_path_factory: pytest.TempPathFactory) -> Arena:
    folder = tmp_path_factory.mktemp("web")
    path = folder / "arena.db"
    url = f"sqlite:///{path}"
    responder = by_model({TREND_MODEL: trend_trader, CONTRA_MODEL: contrarian_trader})
    with FakeOpenAIServer("modelscope", responder=responder) as llm:
        settings = arena_settings(url, llm.base_url)
        database = open_database(settings)
        cache = CandleCache(database.engine)
        for coin, frame in six_coin_market(COINS, periods=PERIODS).items():
            cache.save(exchange=EXCHANGE, symbol=f"{coin}/USDT:USDT", timeframe="5m", frame=frame)
        options = BacktestOptions(
            data=(Path(f"cache:{EXCHANGE}"),),
            agents=(
                # A vision agent: its calls carry chart images the chat card shows.
                AgentConfig.from_spec(f"trend=modelscope:{TREND_MODEL}").model_copy(
                    update={"vision": True}
                ),
                AgentConfig.from_spec(f"contra=modelscope:{CONTRA_MODEL}"),
                AgentConfig.from_spec("hodl=baseline:buy_and_hold"),
                AgentConfig.from_spec("ema=baseline:ema_trend"),
            ),
            start=START,
            end=END,
            interval="15m",
            llm_mode="cached",
        )
        result = asyncio.run(run_backtest(settings, options, database=database))
        database.engine.dispose()
    return Arena(url=url, path=path, result=result, settings=settings)


@pytest.fixture(scope="session")
def read_model(arena: Arena) -> ReadModel:
    return ReadModel(open_read_engine(arena.url))


@pytest.fixture
def client(arena: Arena, read_model: ReadModel) -> Iterator[TestClient]:
    app = create_app(read_model, default_run=arena.result.run_id)
    with TestClient(app) as test_client:
        yield test_client
