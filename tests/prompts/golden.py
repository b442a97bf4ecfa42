"""The fixed snapshot and account behind the checked-in expected prompt.

Regenerate the expected text after a deliberate prompt change (then review the diff, and bump
PROMPT_VERSION when the rules or the layout changed):

    .venv/bin/python -m tests.prompts.golden

Every number is built from integers by exact arithmetic (no sin/exp), so the rendered text is the
same on every machine.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from app.domain import AccountView, ChatMessage, CoinSnapshot, ExitPlan, MarketSnapshot, Position
from app.prompts import PROMPT_VERSION, build_messages

EXPECTED_DIR = Path(__file__).resolve().parent / "expected"
SYSTEM_FILE = EXPECTED_DIR / f"system_{PROMPT_VERSION}.txt"
USER_FILE = EXPECTED_DIR / f"user_{PROMPT_VERSION}.txt"

AT = datetime(2025, 10, 28, 7, 3, tzinfo=UTC)
STARTED_AT = datetime(2025, 10, 22, 9, 0, tzinfo=UTC)
# A distinctive volume on a 4h candle that has not closed at AT: it must never be shown.
FORMING_VOLUME = 31337.0

# A repeating pattern of small integers: prices wiggle by up to ±0.5% around a drift.
_PATTERN = np.array([0, 3, 1, 4, -1, 5, -2, 6, 2, -3, 1, 4, 0, -4, 2], dtype=float)


def _wiggle(rows: int) -> np.ndarray:
    return np.resize(_PATTERN, rows) + np.arange(rows, dtype=float) / 4.0


def candles(
    base: float, rows: int, step: timedelta, last_open: datetime, warmup: dict[str, int]
) -> pd.DataFrame:
    """Return a frame with OHLCV and every indicator column, NaN for `warmup[column]` rows."""
    index = pd.date_range(end=last_open, periods=rows, freq=step, tz=UTC, name="open_time")
    close = base * (1.0 + _wiggle(rows) / 1000.0)
    frame = pd.DataFrame(
        {
            "open": close * 0.999,
            "high": close * 1.002,
            "low": close * 0.997,
            "close": close,
            "volume": 1000.0 + 25.0 * np.resize(_PATTERN, rows) ** 2,
        },
        index=index,
    )
    frame["ema20"] = close * 0.9995
    frame["ema50"] = close * 0.998
    frame["macd"] = base * (np.resize(_PATTERN, rows) - 1.0) / 10000.0
    frame["macd_signal"] = frame["macd"] * 0.5
    frame["macd_hist"] = frame["macd"] - frame["macd_signal"]
    frame["rsi7"] = 50.0 + 4.5 * np.resize(_PATTERN, rows)
    frame["rsi14"] = 50.0 + 2.25 * np.resize(_PATTERN, rows)
    frame["atr3"] = base * 0.004
    frame["atr14"] = base * 0.005
    frame["volume_avg"] = 1200.0 + np.arange(rows, dtype=float)
    for column, count in warmup.items():
        frame.iloc[:count, frame.columns.get_loc(column)] = np.nan
    return frame


def coin(
    name: str, base: float, *, intraday_rows: int = 60, context_rows: int = 60, **fields: object
) -> CoinSnapshot:
    """Return one coin's snapshot: closed 3m candles, closed 4h candles plus a forming one."""
    intraday = candles(
        base,
        intraday_rows,
        timedelta(minutes=3),
        AT - timedelta(minutes=3),
        fields.pop("intraday_warmup", {}),
    )  # type: ignore[arg-type]
    context = candles(
        base,
        context_rows,
        timedelta(hours=4),
        datetime(2025, 10, 28, tzinfo=UTC),
        fields.pop("context_warmup", {}),
    )  # type: ignore[arg-type]
    forming = context.iloc[[-1]].copy()
    forming.index = forming.index + pd.Timedelta(hours=4)
    forming["volume"] = FORMING_VOLUME
    context = pd.concat([context, forming])
    return CoinSnapshot(
        coin=name,
        symbol=f"{name}/USDC:USDC",
        last_price=float(intraday["close"].iloc[-1]) * 1.0001,
        intraday=intraday,
        context=context,
        **fields,  # type: ignore[arg-type]
    )


def snapshot() -> MarketSnapshot:
    """Return BTC (full data), XRP (no open interest) and DOGE (no funding, short warm-up)."""
    coins = {
        "BTC": coin(
            "BTC",
            114000.0,
            funding_rate=0.0000125,
            open_interest=29909.65,
            open_interest_avg=29961.82,
        ),
        "XRP": coin(
            "XRP",
            2.65,
            funding_rate=-0.0000068904,
            open_interest=None,
            missing=frozenset({"open_interest"}),
        ),
        "DOGE": coin(
            "DOGE",
            0.2015,
            intraday_rows=15,
            context_rows=30,
            intraday_warmup={"ema20": 8, "rsi14": 7},
            context_warmup={"ema50": 30, "macd": 25},
            funding_rate=None,
            open_interest=585165412.0,
            open_interest_avg=585177018.6,
            missing=frozenset({"funding_rate"}),
        ),
    }
    return MarketSnapshot(at=AT, intraday_timeframe="3m", context_timeframe="4h", coins=coins)


def account() -> AccountView:
    """Return an account with a BTC long and a DOGE short (positions listed out of order)."""
    btc = Position(
        coin="BTC",
        side="long",
        quantity=0.05,
        entry_price=112500.0,
        leverage=20,
        margin_usd=281.25,
        liquidation_price=107437.5,
        opened_at=datetime(2025, 10, 27, 21, 40, tzinfo=UTC),
        exit_plan=ExitPlan(
            profit_target=118000.0,
            stop_loss=110800.0,
            invalidation_condition="4-hour close below the 50-period EMA",
        ),
        confidence=0.65,
        risk_usd=85.0,
        justification="4h uptrend intact; intraday pullback to the 20-EMA held.",
        entry_fee_usd=2.53,
        funding_usd=0.41,
    )
    doge = Position(
        coin="DOGE",
        side="short",
        quantity=15000.0,
        entry_price=0.2051,
        leverage=10,
        margin_usd=307.65,
        liquidation_price=0.2245845,
        opened_at=datetime(2025, 10, 28, 5, 12, tzinfo=UTC),
        exit_plan=ExitPlan(
            profit_target=0.1931,
            stop_loss=0.2112,
            invalidation_condition='Intraday close above the "breakout" level 0.21',
        ),
        confidence=0.6,
        risk_usd=91.5,
        justification="Momentum fading — RSI divergence on the 3-minute chart.",
        entry_fee_usd=1.38,
        funding_usd=-0.12,
    )
    prices = snapshot().prices()
    unrealized_usd = sum(pos.unrealized_pnl_usd(prices[pos.coin]) for pos in (btc, doge))
    return AccountView(
        at=AT,
        starting_cash_usd=10_000.0,
        cash_usd=9415.64,
        margin_usd=588.9,
        unrealized_pnl_usd=unrealized_usd,
        realized_pnl_usd=0.0,
        fees_paid_usd=3.91,
        funding_paid_usd=0.29,
        positions={"DOGE": doge, "BTC": btc},
    )


def messages() -> list[ChatMessage]:
    """Return the messages of the golden prompt."""
    return build_messages(
        snapshot(),
        account(),
        started_at=STARTED_AT,
        invocation=2874,
        fee_bps=4.5,
        slippage_bps=1.0,
        max_leverage=20,
        max_position_margin_pct=50.0,
        sharpe=0.338,
    )


def main() -> int:
    """Write the expected prompt files from the current code."""
    system, user = messages()
    EXPECTED_DIR.mkdir(parents=True, exist_ok=True)
    SYSTEM_FILE.write_text(system.content, encoding="utf-8")
    USER_FILE.write_text(user.content, encoding="utf-8")
    print(f"wrote {SYSTEM_FILE} and {USER_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
