"""Time the prompt: one six-coin prompt from precomputed indicators, and the per-agent part alone.

    .venv/bin/python benchmarks/bench_prompt.py [--runs 300]

The engine renders the market section once per cycle (`render_market_section`) and passes it to
`build_messages` for every agent, so an agent costs only its preamble and account section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from app.decisions import parse_decisions
from app.domain import (
    ALPHA_ARENA_COINS,
    AccountView,
    CoinSnapshot,
    ExitPlan,
    MarketSnapshot,
    Position,
)
from app.errors import DecisionError
from app.prompts import build_messages, render_market_section

AT = datetime(2025, 10, 28, 7, 3, tzinfo=UTC)
PRICES = {"BTC": 114200.0, "ETH": 4116.0, "SOL": 201.0, "BNB": 1132.0, "XRP": 2.65, "DOGE": 0.2015}
LIMITS = {"fee_bps": 4.5, "slippage_bps": 1.0, "max_leverage": 20, "max_position_margin_pct": 50.0}


def frame(rng: np.random.Generator, base: float, rows: int, step: timedelta) -> pd.DataFrame:
    """Return OHLCV plus every indicator column the prompt reads (values random, shapes real)."""
    index = pd.date_range(end=AT - step, periods=rows, freq=step, tz=UTC, name="open_time")
    close = base * np.exp(np.cumsum(rng.normal(0, 0.001, rows)))
    columns = {
        "open": close,
        "high": close * 1.001,
        "low": close * 0.999,
        "close": close,
        "volume": rng.uniform(100, 1000, rows),
        "ema20": close * 0.999,
        "ema50": close * 0.998,
        "macd": rng.normal(0, base * 1e-4, rows),
        "macd_signal": rng.normal(0, base * 1e-4, rows),
        "macd_hist": rng.normal(0, base * 1e-5, rows),
        "rsi7": rng.uniform(20, 80, rows),
        "rsi14": rng.uniform(30, 70, rows),
        "atr3": close * 0.004,
        "atr14": close * 0.005,
        "volume_avg": rng.uniform(400, 600, rows),
    }
    return pd.DataFrame(columns, index=index)


def snapshot() -> MarketSnapshot:
    """Return six coins with 60 closed 3m candles and 60 closed 4h candles each."""
    rng = np.random.default_rng(7)
    coins = {
        coin: CoinSnapshot(
            coin=coin,
            symbol=f"{coin}/USDC:USDC",
            last_price=price,
            intraday=frame(rng, price, 60, timedelta(minutes=3)),
            context=frame(rng, price, 60, timedelta(hours=4)),
            funding_rate=0.0000125,
            open_interest=1e6,
            open_interest_avg=1.01e6,
        )
        for coin, price in PRICES.items()
    }
    return MarketSnapshot(at=AT, intraday_timeframe="3m", context_timeframe="4h", coins=coins)


def account(positions: int) -> AccountView:
    """Return an account with `positions` open longs (the per-agent work grows with them)."""
    open_positions = {
        coin: Position(
            coin=coin,
            side="long",
            quantity=1000.0 / PRICES[coin],
            entry_price=PRICES[coin],
            leverage=10,
            margin_usd=100.0,
            liquidation_price=PRICES[coin] * 0.905,
            opened_at=AT - timedelta(hours=3),
            exit_plan=ExitPlan(PRICES[coin] * 1.05, PRICES[coin] * 0.97, "4h close below EMA50"),
            confidence=0.6,
            risk_usd=30.0,
            justification="Trend continuation on the 4h chart.",
        )
        for coin in ALPHA_ARENA_COINS[:positions]
    }
    return AccountView(
        at=AT,
        starting_cash_usd=10_000.0,
        cash_usd=10_000.0 - 100.0 * positions,
        margin_usd=100.0 * positions,
        unrealized_pnl_usd=0.0,
        realized_pnl_usd=0.0,
        fees_paid_usd=0.0,
        funding_paid_usd=0.0,
        positions=open_positions,
    )


def answers() -> tuple[str, str, str]:
    """Return a six-coin answer bare, after 20k characters of reasoning, and a hostile 1 MB text."""
    entries = {
        coin: {
            "coin": coin,
            "signal": "hold",
            "quantity": 1.5,
            "leverage": 10,
            "profit_target": price * 1.05,
            "stop_loss": price * 0.97,
            "invalidation_condition": "4h close below EMA50",
            "confidence": 0.6,
            "risk_usd": 30.0,
            "justification": "",
        }
        for coin, price in PRICES.items()
    }
    bare = json.dumps(entries)
    reasoning = "<think>" + ("BTC holds above the 20-EMA {see 4h}. " * 540) + "</think>"
    hostile = "[{" * 500_000
    return bare, f"{reasoning}\n```json\n{bare}\n```", hostile


def measure(action: Callable[[], object], runs: int) -> tuple[float, float]:
    """Return the median and the 95th percentile in milliseconds."""
    action()  # warm caches (the system prompt template, pandas code paths)
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        action()
        times.append((time.perf_counter_ns() - start) / 1e6)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def _rejected(text: str, coins: tuple[str, ...]) -> None:
    try:
        parse_decisions(text, coins)
    except DecisionError:
        return
    raise AssertionError("the hostile answer was accepted")


def main() -> None:
    """Print the figures recorded in docs/BENCHMARKS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    runs = parser.parse_args().runs
    market = snapshot()
    started_at = AT - timedelta(days=3)
    section = render_market_section(market)

    def full(view: AccountView) -> Callable[[], object]:
        return lambda: build_messages(
            market, view, started_at=started_at, invocation=100, sharpe=0.5, **LIMITS
        )  # type: ignore[arg-type]

    def per_agent(view: AccountView) -> Callable[[], object]:
        return lambda: build_messages(
            market,
            view,
            started_at=started_at,
            invocation=100,
            sharpe=0.5,
            market_section=section,
            **LIMITS,
        )  # type: ignore[arg-type]

    _, user = build_messages(
        market, account(6), started_at=started_at, invocation=100, sharpe=0.5, **LIMITS
    )  # type: ignore[arg-type]
    print(f"six-coin prompt: user message {len(user.content):,} characters, {runs} runs each")
    rows = [
        ("full prompt, 0 positions", full(account(0))),
        ("full prompt, 6 positions", full(account(6))),
        ("market section alone (once per cycle)", lambda: render_market_section(market)),
        ("per-agent part, 0 positions", per_agent(account(0))),
        ("per-agent part, 6 positions", per_agent(account(6))),
    ]
    bare, thinking, hostile = answers()
    coins = tuple(PRICES)
    rows += [
        ("parse a six-coin answer", lambda: parse_decisions(bare, coins)),
        ("parse it after 20k chars of reasoning", lambda: parse_decisions(thinking, coins)),
        ("reject a hostile 1 MB answer", lambda: _rejected(hostile, coins)),
    ]
    for label, action in rows:
        median_ms, p95_ms = measure(action, runs)
        print(f"{label:40s} median {median_ms:8.3f} ms   p95 {p95_ms:8.3f} ms")


if __name__ == "__main__":
    main()
