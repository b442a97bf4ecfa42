"""`arena db copy`: an arena moved SQLite → PostgreSQL → SQLite reports the same everywhere."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import models
from app.db.session import make_engine
from app.market.sample import write_sample_data
from tests.arena_cli import arena
from tests.fakes.exchange import FakeExchange, synthetic_candles

EXCHANGE_NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
FIRST_CYCLE = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
AGENTS = ("--agent", "hodl=baseline:buy_and_hold", "--agent", "ema=baseline:ema_trend")
# The backtests: a holder and a random trader (hourly and 4-hourly cycles over 10 days).
BACKTEST_AGENTS = ("--agent", "hodl=baseline:buy_and_hold", "--agent", "rnd=baseline:random@7/6")


@pytest.fixture(scope="module")
def exchange() -> Iterator[FakeExchange]:
    candles = synthetic_candles(
        start=EXCHANGE_NOW - timedelta(days=40), end=EXCHANGE_NOW + timedelta(hours=1)
    )
    with FakeExchange(candles, now=EXCHANGE_NOW) as fake:
        yield fake


@pytest.fixture(scope="module")
def source(
    exchange: FakeExchange, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, list[str]]:
    """A SQLite arena holding a live run (three cycles of two baselines) and two backtests."""
    folder = tmp_path_factory.mktemp("source")
    url = f"sqlite:///{folder / 'arena.db'}"
    env = {
        "DATABASE_URL": url,
        "EXCHANGE_ID": "binanceusdm",
        "EXCHANGE_API_URL": exchange.url,
        "EXCHANGE_TIMEOUT_S": "60",
    }
    for step in range(3):
        at = (FIRST_CYCLE + step * timedelta(minutes=3)).isoformat()
        result = arena("run", "--once", "--at", at, *AGENTS, env=env, cwd=folder)
        assert result.exit_code == 0, result.stderr
    data = write_sample_data(folder / "sample", days=10)
    for interval in ("1h", "4h"):
        result = arena(
            "backtest",
            "--data",
            str(data),
            *BACKTEST_AGENTS,
            "--interval",
            interval,
            env=env,
            cwd=folder,
        )
        assert result.exit_code == 0, result.stderr
    with make_engine(url).connect() as connection:
        runs = sorted(set(connection.scalars(select(models.Agent.run_id))))
    assert len(runs) == 3 and "live" in runs
    return url, runs


def leaderboards(url: str, runs: list[str], folder: Path) -> dict[str, object]:
    boards = {}
    for run in runs:
        result = arena("leaderboard", "--run", run, "--json", env={"DATABASE_URL": url}, cwd=folder)
        assert result.exit_code == 0, result.stderr
        boards[run] = json.loads(result.stdout)
    return boards


def copy(*args: str, cwd: Path) -> tuple[int, str]:
    result = arena("db", "copy", *args, cwd=cwd)
    return result.exit_code, result.stderr


def test_sqlite_to_postgres_and_back_gives_identical_leaderboards(
    source: tuple[str, list[str]], postgres_url: str, tmp_path: Path
) -> None:
    url, runs = source
    expected = leaderboards(url, runs, tmp_path)
    assert all(board["agents"] for board in expected.values())  # type: ignore[index]

    code, stderr = copy("--from", url, "--to", postgres_url, cwd=tmp_path)
    assert code == 0, stderr
    assert "row counts and checksums match" in stderr
    assert leaderboards(postgres_url, runs, tmp_path) == expected

    back = f"sqlite:///{tmp_path / 'back.db'}"
    code, stderr = copy("--from", postgres_url, "--to", back, cwd=tmp_path)
    assert code == 0, stderr
    assert leaderboards(back, runs, tmp_path) == expected

    # The sequences moved past the copied ids: the copy takes new rows (another backtest).
    data = write_sample_data(tmp_path / "sample", days=10)
    result = arena(
        "backtest",
        "--data",
        str(data),
        *BACKTEST_AGENTS,
        "--interval",
        "4h",
        env={"DATABASE_URL": postgres_url},
        cwd=tmp_path,
    )
    assert result.exit_code == 0, result.stderr


def test_a_non_empty_target_is_refused_without_force(
    source: tuple[str, list[str]], db_url: str, tmp_path: Path
) -> None:
    url, runs = source
    code, stderr = copy("--from", url, "--to", db_url, cwd=tmp_path)
    assert code == 0, stderr
    code, stderr = copy("--from", url, "--to", db_url, cwd=tmp_path)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, stderr
    assert "already holds the arena's tables" in lines[0] and "--force" in lines[0]
    code, stderr = copy("--from", url, "--to", db_url, "--force", cwd=tmp_path)
    assert code == 0, stderr
    assert leaderboards(db_url, runs, tmp_path) == leaderboards(url, runs, tmp_path)


def test_one_run_copies_beside_other_runs_with_its_ids_shifted(
    source: tuple[str, list[str]], db_url: str, tmp_path: Path
) -> None:
    """Copy one backtest, then the live run into the same target: the live run's ids would
    collide with the backtest's (both start at 1 in a fresh copy) unless shifted."""
    url, runs = source
    backtest = next(run for run in runs if run != "live")
    code, stderr = copy("--from", url, "--to", db_url, "--run", backtest, cwd=tmp_path)
    assert code == 0, stderr
    code, stderr = copy("--from", url, "--to", db_url, "--run", "live", cwd=tmp_path)
    assert code == 0, stderr
    code, stderr = copy("--from", url, "--to", db_url, "--run", "live", cwd=tmp_path)
    assert code == 2 and "already holds run 'live'" in stderr
    code, stderr = copy("--from", url, "--to", db_url, "--run", "live", "--force", cwd=tmp_path)
    assert code == 0, stderr

    copied = [backtest, "live"]
    assert leaderboards(db_url, copied, tmp_path) == leaderboards(url, copied, tmp_path)
    with make_engine(db_url).connect() as connection:
        assert set(connection.scalars(select(models.Agent.run_id))) == set(copied)
        assert connection.execute(select(func.count(models.Candle.exchange))).scalar_one() == 0
