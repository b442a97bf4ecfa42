"""`arena start` without a key: recent real candles when the exchange answers, then the files
in data/market/, then synthetic data that every output labels SYNTHETIC.

The exchange is tests/fakes/exchange.py over loopback (real ccxt, `EXCHANGE_API_URL`); the
first look's history is cut to 10 days so the backtest after the ~9-day warm-up stays short.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import func, select

from app import first_look
from app.db import models
from app.db.session import make_engine
from app.market.sample import write_sample_data
from app.reports import equity_chart
from tests.arena_cli import arena
from tests.fakes.exchange import DEFAULT_COINS, FakeExchange, synthetic_candles

HISTORY = timedelta(days=10)


@pytest.fixture(autouse=True)
def _short_history(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(first_look, "FIRST_LOOK_HISTORY", HISTORY)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'data' / 'arena.db'}")


@pytest.fixture
def exchange() -> Iterator[FakeExchange]:
    """A Hyperliquid-shaped exchange whose 5m candles cover the last 11 days of the real clock."""
    now = datetime.now(UTC)
    candles = synthetic_candles(
        DEFAULT_COINS, start=now - HISTORY - timedelta(days=1), end=now, timeframe="5m"
    )
    with FakeExchange(candles, base_timeframe="5m") as fake:
        yield fake


@pytest.fixture
def unreachable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the exchange at a loopback port that refuses connections (held for the test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("EXCHANGE_API_URL", f"http://127.0.0.1:{sock.getsockname()[1]}")
        yield


def run_id_of(stdout: str) -> str:
    match = re.search(r"Run id: (\S+)", stdout)
    assert match, stdout
    return match.group(1)


def test_the_first_look_backtests_candles_downloaded_from_the_exchange(
    exchange: FakeExchange, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EXCHANGE_API_URL", exchange.url)

    first = arena("start")

    assert first.exit_code == 0, first.stderr
    coins = "BTC, ETH, SOL, BNB, XRP, DOGE"
    assert f"Downloading 5m candles of {coins} from hyperliquid" in first.stderr
    assert "First look on hyperliquid's 5m candles of the last 10 days" in first.stdout
    assert "SYNTHETIC" not in first.stdout + first.stderr
    run_id = run_id_of(first.stdout)
    assert f"arena leaderboard --run {run_id}" in first.stdout
    assert "arena data download" in first.stdout
    fetched = len(exchange.requests_to("/info:candleSnapshot"))
    assert fetched >= len(DEFAULT_COINS)
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'arena.db'}")
    with engine.connect() as connection:
        cached = dict(
            connection.execute(
                select(models.Candle.symbol, func.count())
                .where(models.Candle.timeframe == "5m")
                .group_by(models.Candle.symbol)
            ).all()
        )
    # 10 days of 5m candles per coin: 2,880 (the last may still be settling, so not cached).
    assert sorted(cached) == sorted(f"{coin}/USDC:USDC" for coin in DEFAULT_COINS)
    assert all(2_870 <= count <= 2_880 for count in cached.values()), cached

    exchange.reset()
    second = arena("start")

    # The cache holds them: at most the newest candle of each coin is asked for again.
    assert second.exit_code == 0, second.stderr
    assert len(exchange.requests_to("/info:candleSnapshot")) <= len(DEFAULT_COINS)
    assert run_id_of(second.stdout) != run_id


def test_an_unreachable_exchange_falls_back_to_the_files_in_data_market(
    unreachable: None, tmp_path: Path
) -> None:
    market = write_sample_data(tmp_path / "data" / "market", days=HISTORY.days)
    (market / "README.txt").unlink()  # candle files of the user's own, not the sample's

    result = arena("start")

    assert result.exit_code == 0, result.stderr
    assert "Could not download candles from hyperliquid: " in result.stderr
    assert "Using the candle files in data/market/ instead." in result.stderr
    assert "First look on the candles in data/market" in result.stdout
    assert "SYNTHETIC" not in result.stdout


def test_without_exchange_or_files_every_output_of_the_synthetic_run_says_so(
    unreachable: None,
) -> None:
    result = arena("start")

    assert result.exit_code == 0, result.stderr
    assert (
        "No candle files in data/market/ either: this first look runs on SYNTHETIC data "
        "(a seeded random walk, not market prices)." in " ".join(result.stderr.split())
    )
    run_id = run_id_of(result.stdout)
    assert "SYNTHETIC" in run_id
    title = result.stdout.splitlines()[0]
    assert "SYNTHETIC" in title
    assert result.stdout.count("buy_and_hold (SYNTHETIC)") == 1
    assert result.stdout.count("ema_trend (SYNTHETIC)") == 1

    board = arena("leaderboard", "--run", run_id)
    listed = json.loads(arena("leaderboard", "--run", run_id, "--json").stdout)

    assert "SYNTHETIC data" in board.stdout.splitlines()[0]
    assert "buy_and_hold (SYNTHETIC)" in board.stdout and "ema_trend (SYNTHETIC)" in board.stdout
    assert listed["synthetic"] is True and listed["run_id"] == run_id


def test_a_backtest_of_the_sample_data_is_labelled_synthetic_in_its_json_and_report(
    tmp_path: Path,
) -> None:
    data = write_sample_data(tmp_path / "sample", days=10)

    result = arena(
        "backtest",
        "--data",
        str(data),
        "--agent",
        "hodl=baseline:buy_and_hold",
        "--start",
        "2025-11-03T12:00",
        "--interval",
        "5m",
        "--report",
        str(tmp_path / "report"),
        "--json",
    )

    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    saved = json.loads((tmp_path / "report" / "summary.json").read_text(encoding="utf-8"))
    assert summary["synthetic"] is True and saved["synthetic"] is True
    assert "SYNTHETIC" in summary["run_id"]


def test_the_chart_draws_agents_over_the_benchmark_and_gives_final_returns() -> None:
    """buy_and_hold pays fees the benchmark does not: its line lies just under the dashed one
    and must stay visible on top of it."""
    index = pd.date_range("2025-10-20", periods=4, freq="5min", tz="UTC")
    equity = pd.DataFrame({"hodl": [10_000.0, 9_990.0, 9_995.0, 9_980.0]}, index=index)
    benchmark = pd.Series([10_000.0, 9_994.0, 9_999.0, 9_986.0], index=index)

    figure = equity_chart(
        equity,
        benchmark=benchmark,
        title="SYNTHETIC data\nAccount value",
        returns_pct={"hodl": -0.2},
        benchmark_return_pct=-0.14,
        label_suffix=" (SYNTHETIC)",
    )

    axes = figure.axes[0]
    lines = {line.get_label(): line for line in axes.get_lines()}
    agent = lines["hodl (SYNTHETIC): -0.20%"]
    hodl_line = lines["buy & hold (equal weight, no fees): -0.14%"]
    assert agent.get_zorder() > hodl_line.get_zorder()
    assert [text.get_text() for text in axes.get_legend().get_texts()] == list(lines)
    assert axes.get_title().startswith("SYNTHETIC data")
