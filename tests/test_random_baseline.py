"""`baseline:random`, the luck line: seeded, at the rate asked, with ema_trend's exit plan, and
under the same risk rules as every agent (through the real engine and a real SQLite file)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.backtest import BacktestOptions
from app.config import AgentConfig, load_settings
from app.db import queries
from app.domain import AccountView, CoinSnapshot, MarketSnapshot
from app.errors import ConfigError
from app.indicators import add_context_indicators, add_intraday_indicators
from app.llm.baselines import (
    DEFAULT_RANDOM_ENTRIES_PER_DAY,
    RandomStrategy,
    build_baseline,
    parse_random_model,
    random_draws,
    random_model,
)
from app.ports import DecisionRequest
from app.trading import risk
from app.wiring import open_database, run_backtest
from tests.fakes.candles import random_walk_candles

AT = datetime(2025, 10, 20, tzinfo=UTC)
COINS = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
FIVE_MINUTES = timedelta(minutes=5)


def market(coins: tuple[str, ...] = COINS, *, intraday: str = "5m") -> MarketSnapshot:
    """Context candles rising 100 -> 110 with highs and lows 0.2% off the close."""
    closes = np.linspace(100.0, 110.0, 120)
    index = pd.date_range(end="2025-10-19 20:00", periods=len(closes), freq="4h", tz="UTC")
    candles = pd.DataFrame(
        {
            "open": closes,
            "high": closes * 1.002,
            "low": closes * 0.998,
            "close": closes,
            "volume": np.full(len(closes), 100.0),
        },
        index=index,
    )
    return MarketSnapshot(
        at=AT,
        intraday_timeframe=intraday,
        context_timeframe="4h",
        coins={
            coin: CoinSnapshot(
                coin=coin,
                symbol=f"{coin}/USDT:USDT",
                last_price=110.0,
                intraday=add_intraday_indicators(candles),
                context=add_context_indicators(candles),
            )
            for coin in coins
        },
    )


def flat_account(at: datetime = AT) -> AccountView:
    return AccountView(
        at=at,
        starting_cash_usd=10_000.0,
        cash_usd=10_000.0,
        margin_usd=0.0,
        unrealized_pnl_usd=0.0,
        realized_pnl_usd=0.0,
        fees_paid_usd=0.0,
        funding_paid_usd=0.0,
        positions={},
    )


async def decide_many(strategy: RandomStrategy, snapshot: MarketSnapshot, times: list[datetime]):  # type: ignore[no-untyped-def]
    answers = []
    for at in times:
        request = DecisionRequest(
            at=at, snapshot=snapshot, account=flat_account(at), coins=tuple(snapshot.coins)
        )
        answers.append(await strategy.decide(request))
    return answers


def entries(answers) -> list[tuple[int, str, str]]:  # type: ignore[no-untyped-def]
    return [
        (i, decision.coin, decision.signal)
        for i, answer in enumerate(answers)
        for decision in answer.decisions
        if decision.signal in ("buy_to_enter", "sell_to_enter")
    ]


# -- the model string --------------------------------------------------------------------------


def test_the_model_string_carries_the_seed_and_the_rate() -> None:
    assert parse_random_model("random") == parse_random_model("random@0")
    plain = parse_random_model("random@7")
    assert plain is not None
    assert (plain.seed, plain.entries_per_day, plain.group) == (
        7,
        DEFAULT_RANDOM_ENTRIES_PER_DAY,
        "random",
    )
    custom = parse_random_model("random@7/2.5")
    assert custom is not None
    assert (custom.seed, custom.entries_per_day, custom.group) == (7, 2.5, "random/2.5")
    assert parse_random_model("ema_trend") is None
    assert random_model(3) == "random@3"
    assert random_model(3, 2.5) == "random@3/2.5"
    strategy = build_baseline("rnd", "random@7/2.5")
    assert isinstance(strategy, RandomStrategy)
    assert (strategy.name, strategy.seed, strategy.entries_per_day) == ("rnd", 7, 2.5)
    # The spec grammar keeps it whole: the model string is what the database records.
    agent = AgentConfig.from_spec("rnd=baseline:random@7/2.5")
    assert (agent.provider, agent.model) == ("baseline", "random@7/2.5")


@pytest.mark.parametrize("model", ["random@", "random@-1", "random@x", "random@1/x", "random/"])
def test_a_malformed_random_model_is_refused_with_the_grammar(model: str) -> None:
    with pytest.raises(ConfigError, match=r"random@SEED"):
        build_baseline("rnd", model)


def test_a_zero_rate_is_refused() -> None:
    with pytest.raises(ConfigError, match="entries per day must be above 0"):
        build_baseline("rnd", "random@1/0")


def test_an_unknown_baseline_lists_random_among_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"random\[@SEED\]"):
        build_baseline("x", "randomly")


# -- the draws -------------------------------------------------------------------------------


def test_draws_depend_only_on_seed_coin_and_time() -> None:
    first = random_draws(7, "BTC", AT)
    assert random_draws(7, "BTC", AT) == first
    # The same instant written in another time zone is the same cycle.
    assert (
        random_draws(7, "BTC", AT.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Tokyo")))
        == first
    )
    others = {
        random_draws(8, "BTC", AT),
        random_draws(7, "ETH", AT),
        random_draws(7, "BTC", AT + FIVE_MINUTES),
    }
    assert first not in others and len(others) == 3
    assert all(0.0 <= value < 1.0 for pair in others for value in pair)


def test_the_same_seed_gives_the_same_entries_and_another_seed_others() -> None:
    """A fresh strategy, and times visited in another order, give the same entries: nothing
    carries from one call to the next."""
    snapshot = market()
    times = [AT + i * FIVE_MINUTES for i in range(2_000)]
    one = entries(asyncio.run(decide_many(RandomStrategy(seed=1), snapshot, times)))
    again = entries(asyncio.run(decide_many(RandomStrategy(seed=1), snapshot, times)))
    backwards = asyncio.run(decide_many(RandomStrategy(seed=1), snapshot, times[::-1]))[::-1]
    other = entries(asyncio.run(decide_many(RandomStrategy(seed=2), snapshot, times)))
    assert one == again == entries(backwards)
    assert len(one) > 50
    assert one != other
    shared = set(one) & set(other)
    assert len(shared) < len(one) / 2


def test_entries_come_at_the_rate_asked_with_both_sides_alike() -> None:
    """Always flat, 6 coins, 5-minute cycles for 30 days at 2 entries per coin-day:
    p = 2 x 5 / 1440 = 0.006944 per coin-cycle, 51,840 coin-cycles, so 360 entries expected with
    a binomial spread of sqrt(360 x (1 - p)) = 18.9; the count must lie within 4 of those."""
    snapshot = market()
    strategy = RandomStrategy(seed=11, entries_per_day=2.0)
    assert strategy.entry_probability(FIVE_MINUTES) == pytest.approx(2 * 5 / 1440)
    times = [AT + i * FIVE_MINUTES for i in range(30 * 288)]
    found = entries(asyncio.run(decide_many(strategy, snapshot, times)))
    assert abs(len(found) - 360) <= 4 * 18.9
    longs = sum(1 for _, _, signal in found if signal == "buy_to_enter")
    assert abs(longs - len(found) / 2) <= 4 * np.sqrt(len(found) / 4)
    per_coin = {coin: sum(1 for _, c, _ in found if c == coin) for coin in COINS}
    assert all(abs(count - 60) <= 4 * np.sqrt(60) for count in per_coin.values()), per_coin


def test_the_cycle_length_comes_from_the_snapshot() -> None:
    """The same 2 entries a day: a 1-hour cycle enters with p = 2/24, a 5-minute one 2/288."""
    strategy = RandomStrategy(entries_per_day=2.0)
    assert strategy.entry_probability(timedelta(hours=1)) == pytest.approx(2 / 24)
    assert strategy.entry_probability(timedelta(days=1)) == 1.0
    hourly = market(intraday="1h")
    times = [AT + i * timedelta(hours=1) for i in range(24 * 30)]
    found = entries(asyncio.run(decide_many(strategy, hourly, times)))
    # 6 coins x 30 days x 2 = 360 expected, spread sqrt(360 x 22/24) = 18.2.
    assert abs(len(found) - 360) <= 4 * 18.2


def test_an_entry_has_ema_trends_exit_plan_and_sizing_and_passes_the_risk_checks() -> None:
    """Price 110, ATR14 of the 4h candles a; stop 2a and target 3a away, 3x leverage, and a
    quantity that loses 1% of the 10,000 USD account at the stop: 100 / (2a). With a ~0.4-USD
    ATR that is about 125 coins (13,750 USD notional, 4,583 USD margin at 3x), which the equal
    share of the cash (10,000 / 6 = 1,666.67 USD of margin) caps at 1,666.67 x 3 x 0.995 / 110."""
    snapshot = market()
    atr = float(snapshot.coins["BTC"].context.iloc[-1]["atr14"])
    strategy = RandomStrategy(seed=3, entries_per_day=288.0, max_position_margin_pct=50.0)
    request = DecisionRequest(at=AT, snapshot=snapshot, account=flat_account(), coins=COINS)
    decisions = asyncio.run(strategy.decide(request)).decisions
    assert all(d.signal in ("buy_to_enter", "sell_to_enter") for d in decisions)
    for decision in decisions:
        sign = 1 if decision.signal == "buy_to_enter" else -1
        assert decision.leverage == 3
        assert decision.stop_loss == pytest.approx(110.0 - sign * 2 * atr)
        assert decision.profit_target == pytest.approx(110.0 + sign * 3 * atr)
        assert decision.risk_usd == pytest.approx(100.0)
        assert decision.quantity == pytest.approx(
            min(100.0 / (2 * atr), 10_000 / 6 * 3 / 110 * 0.995)
        )
    outcome = risk.check(
        decisions,
        account=flat_account(),
        prices=snapshot.prices(),
        rules={},
        limits=risk.RiskLimits(max_position_margin_pct=50.0),
        now=AT,
    )
    assert [o.status for o in outcome.outcomes] == ["accepted"] * len(COINS)


def test_a_coin_with_a_position_is_held_and_a_cold_market_is_not_entered() -> None:
    snapshot = market(("BTC",))
    cold = MarketSnapshot(
        at=AT,
        intraday_timeframe="5m",
        context_timeframe="4h",
        coins={
            "BTC": CoinSnapshot(
                coin="BTC",
                symbol="BTC/USDT:USDT",
                last_price=110.0,
                intraday=snapshot.coins["BTC"].intraday,
                context=snapshot.coins["BTC"].context.iloc[:5],  # ATR14 not warmed up
            )
        },
    )
    strategy = RandomStrategy(seed=1, entries_per_day=288.0)  # enters every flat cycle
    request = DecisionRequest(at=AT, snapshot=cold, account=flat_account(), coins=("BTC",))
    assert [d.signal for d in asyncio.run(strategy.decide(request)).decisions] == ["hold"]
    warm = DecisionRequest(at=AT, snapshot=snapshot, account=flat_account(), coins=("BTC",))
    entry = asyncio.run(strategy.decide(warm)).decisions[0]
    assert entry.signal in ("buy_to_enter", "sell_to_enter")


# -- through the engine ----------------------------------------------------------------------

STEP = timedelta(minutes=15)


def write_market(folder: Path, *, days: int, coins: tuple[str, ...] = ("BTC", "ETH")) -> Path:
    """Seeded random-walk 15m candles, 9 days of warm-up (EMA50 on 4h) plus `days`."""
    folder.mkdir(parents=True, exist_ok=True)
    periods = (9 + days) * 96
    for i, coin in enumerate(coins):
        frame = random_walk_candles(
            start=datetime(2025, 1, 1, tzinfo=UTC),
            periods=periods,
            step=STEP,
            price=100.0 * (i + 1),
            seed=40 + i,
            volatility=0.003,
        )
        out = frame.reset_index()
        out.insert(0, "timestamp_ms", out.pop("open_time").dt.as_unit("ms").astype("int64"))
        out.to_csv(folder / f"{coin}_USDT-15m.csv", index=False)
    return folder


def run(folder: Path, db_url: str, spec: str, **risk_settings: object):  # type: ignore[no-untyped-def]
    settings = load_settings(env_file=None, database={"url": db_url}, risk=risk_settings)
    database = open_database(settings)
    options = BacktestOptions(
        data=(folder,),
        agents=(AgentConfig.from_spec(spec),),
        symbols=("BTC", "ETH"),
        interval="15m",
    )
    result = asyncio.run(run_backtest(settings, options, database=database))
    agent = queries.agents(database.engine, result.run_id)[0]
    trades = queries.closed_trades(database.engine, agent.agent_id)
    still_open = queries.open_positions(database.engine, agent.agent_id)
    return result, trades, still_open


def held_at(trades, still_open, coin: str, at: datetime) -> bool:  # type: ignore[no-untyped-def]
    """Was `coin` held when the cycle at `at` decided? Exits up to `at` are applied first, and
    an entry made at `at` was decided while flat."""
    for trade in trades:
        if trade.coin == coin and trade.opened_at < at < trade.closed_at:
            return True
    return any(p.coin == coin and p.opened_at < at for p in still_open)


def test_through_the_engine_flat_coins_are_entered_at_the_rate_asked(
    tmp_path: Path, db_url: str
) -> None:
    """Real engine, real SQLite. Counting the cycles at which each coin was flat, entries are
    binomial with p = 6 x 15 / 1440 = 0.0625 per flat coin-cycle: within 4 spreads of p x flat."""
    folder = write_market(tmp_path / "data", days=20)
    result, trades, still_open = run(folder, db_url, "rnd=baseline:random@5/6")
    assert result.rows[0].rejected_decisions == 0
    times = [result.start + i * STEP for i in range(result.cycles)]
    flat_cycles = sum(
        1 for coin in ("BTC", "ETH") for at in times if not held_at(trades, still_open, coin, at)
    )
    made = len(trades) + len(still_open)
    p = 6 * 15 / 1440
    expected = p * flat_cycles
    assert flat_cycles < 0.9 * 2 * len(times), "positions should be held part of the time"
    assert abs(made - expected) <= 4 * np.sqrt(expected * (1 - p)), (made, expected)
    assert {trade.exit_reason for trade in trades} <= {"stop_loss", "take_profit", "liquidation"}


def test_through_the_engine_the_risk_limits_bind_random_like_any_agent(
    tmp_path: Path, db_url: str
) -> None:
    """With one open position allowed and entries wanted every cycle, the second coin's entries
    are refused by the risk checks and recorded, and two positions are never open at once."""
    folder = write_market(tmp_path / "data", days=10)
    result, trades, still_open = run(
        folder, db_url, "rnd=baseline:random@2/96", max_open_positions=1
    )
    assert result.rows[0].rejected_decisions > 0
    spans = [(t.opened_at, t.closed_at) for t in trades] + [
        (p.opened_at, result.end + STEP) for p in still_open
    ]
    for i, (opened, closed) in enumerate(spans):
        for other_opened, other_closed in spans[i + 1 :]:
            assert closed <= other_opened or other_closed <= opened, "two positions at once"
    assert len(spans) >= 3
