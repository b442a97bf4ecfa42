"""No look-ahead: changing any candle after time T leaves every prompt issued at or before T
byte-identical (and the prompts after T see the change, so the test could fail)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from app.db.migrate import upgrade
from app.db.repository import AgentIdentity, SqlCycleStore
from app.db.session import make_engine
from app.decisions import TradeDecision
from app.domain import ChatMessage, PaperCosts
from app.market.historical import HistoricalMarketData
from app.metrics import RunningSharpe
from app.ports import DecisionRequest
from app.trading.engine import AgentSlot, CycleEngine, EngineConfig
from app.trading.paper import PaperAccount
from app.trading.recording import BatchRecorder
from app.trading.risk import RiskLimits
from tests.fakes.candles import six_coin_market
from tests.fakes.strategies import ScriptedStrategy

COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
STEP = timedelta(minutes=5)
COSTS = PaperCosts()
CYCLES = 60


def swing(request: DecisionRequest) -> list[TradeDecision]:
    """Trade BTC and DOGE in and out with tight exits, so prompts carry positions and history."""
    decisions = []
    for coin in ("BTC", "DOGE"):
        if coin in request.account.positions:
            decisions.append(TradeDecision(coin=coin, signal="hold"))
            continue
        price = request.snapshot.price(coin)
        decisions.append(
            TradeDecision(
                coin=coin,
                signal="buy_to_enter" if request.invocation % 2 else "sell_to_enter",
                quantity=round(1_000 / price, 6),
                leverage=5,
                stop_loss=price * (0.996 if request.invocation % 2 else 1.004),
                profit_target=price * (1.006 if request.invocation % 2 else 0.994),
                justification="swing",
            )
        )
    return decisions


def funding_series(index: pd.DatetimeIndex, seed: int) -> pd.Series:
    settlements = index[(index.hour % 8 == 0) & (index.minute == 0)]
    rates = np.random.default_rng(seed).normal(0.0001, 0.00005, len(settlements))
    return pd.Series(rates, index=settlements.rename("settled_at"))


def prompts_for(
    candles: dict[str, pd.DataFrame], funding: dict[str, pd.Series], db_url: str
) -> tuple[list[datetime], list[tuple[ChatMessage, ...]]]:
    market = HistoricalMarketData(
        candles, intraday_timeframe="5m", context_timeframe="4h", funding=funding
    )
    database = make_engine(db_url)
    upgrade(db_url, engine=database)
    store = SqlCycleStore(database, run_id="lookahead")
    first = market.first_ready_at()
    store.register_agents([AgentIdentity(name="swing", provider="fake", model="m")], at=first)
    strategy = ScriptedStrategy("swing", swing)
    clock = [first]
    engine = CycleEngine(
        market=market,
        recorder=BatchRecorder(store),
        agents=[
            AgentSlot(
                name="swing",
                strategy=strategy,
                account=PaperAccount(10_000.0, costs=COSTS),
                sharpe=RunningSharpe(STEP),
            )
        ],
        config=EngineConfig(
            coins=COINS,
            interval=STEP,
            limits=RiskLimits(costs=COSTS),
            exit_timeframe="5m",
        ),
        clock=lambda: clock[0],
        fill_prices=lambda snapshot: {
            coin: market.next_open(coin, snapshot.at)[1]  # type: ignore[index]
            for coin in snapshot.coins
        },
    )
    times = [first + i * STEP for i in range(CYCLES)]

    async def run() -> None:
        for moment in times:
            clock[0] = moment
            await engine.run_cycle(moment)
        engine.flush()

    asyncio.run(run())
    return times, [request.messages for request in strategy.requests]


@pytest.mark.parametrize("offset", [23, 48], ids=["inside a 4h candle", "at a 4h boundary"])
def test_changing_candles_after_t_leaves_prompts_up_to_t_byte_identical(
    tmp_path, offset: int
) -> None:
    candles = six_coin_market(COINS, periods=3300)
    funding = {
        coin: funding_series(frame.index, seed=i) for i, (coin, frame) in enumerate(candles.items())
    }
    times, original = prompts_for(candles, funding, f"sqlite:///{tmp_path / 'a.db'}")
    cut = times[0] + offset * STEP
    if offset == 48:
        # T on a 4h boundary, where a context candle closes exactly at T (and must be seen).
        assert cut.hour % 4 == 0 and cut.minute == 0

    changed_candles = {}
    for coin, frame in candles.items():
        frame = frame.copy()
        after = frame.index >= cut  # every candle opening at or after T
        frame.loc[after, ["open", "high", "low", "close"]] *= 1.07
        frame.loc[after, "volume"] *= 3.0
        changed_candles[coin] = frame
    changed_funding = {
        coin: series.where(series.index < cut, series * -5.0) for coin, series in funding.items()
    }
    _, changed = prompts_for(changed_candles, changed_funding, f"sqlite:///{tmp_path / 'b.db'}")

    issued_by_t = [i for i, moment in enumerate(times) if moment <= cut]
    later = [i for i, moment in enumerate(times) if moment > cut]
    assert issued_by_t and later
    for i in issued_by_t:
        assert changed[i] == original[i], f"the prompt at {times[i]} saw a candle after {cut}"
    assert any(changed[i] != original[i] for i in later), "the change must show after T"
