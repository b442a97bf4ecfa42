"""The listing commands, backtests from the candle cache, and `arena start`'s first look."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.db.candles import CandleCache
from app.db.migrate import upgrade
from app.db.session import make_engine
from app.market import load_candles
from app.market.sample import SAMPLE_LABEL, write_sample_data
from tests.arena_cli import arena
from tests.conftest import unset_settings
from tests.postgres import SessionDatabase, server_url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def recorded(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database: SessionDatabase | None,
) -> Iterator[tuple[Path, dict[str, str], str]]:
    """A database (SQLite, then PostgreSQL) holding one backtest of the two baselines on 12 days
    of sample data."""
    folder = tmp_path_factory.mktemp("recorded")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{folder / 'arena.db'}"
        elif postgres_database is None:
            pytest.skip(server_url()[1])
        else:
            url = stack.enter_context(postgres_database.schema())
        yield from _record(folder, {"DATABASE_URL": url})


def _record(folder: Path, env: dict[str, str]) -> Iterator[tuple[Path, dict[str, str], str]]:
    data = write_sample_data(folder / "sample", days=12)
    with pytest.MonkeyPatch.context() as monkeypatch:
        # Module-scoped: set up before the per-test fixture that cleans the environment.
        unset_settings(monkeypatch)
        result = arena(
            "backtest",
            "--data",
            str(data),
            "--agent",
            "hodl=baseline:buy_and_hold",
            "--agent",
            "trend=baseline:ema_trend",
            "--interval",
            "5m",
            cwd=folder,
            env=env,
        )
    assert result.exit_code == 0, result.stderr
    run_id = next(
        word for word in result.stderr.replace("\n", " ").split() if word.startswith("backtest-")
    )
    yield folder, env, run_id.rstrip(")").rstrip(";")


def test_leaderboard_lists_the_run_as_json_and_as_a_table(recorded) -> None:
    folder, env, run_id = recorded
    listed = arena("leaderboard", "--run", run_id, "--json", cwd=folder, env=env)
    assert listed.exit_code == 0, listed.stderr
    payload = json.loads(listed.stdout)
    assert payload["run"] == run_id
    assert [agent["name"] for agent in payload["agents"]] != []
    assert {agent["name"] for agent in payload["agents"]} == {"hodl", "trend"}
    table = arena("leaderboard", "--run", run_id, cwd=folder, env=env)
    assert "hodl" in table.stdout and "trend" in table.stdout and "account value" in table.stdout


def test_positions_trades_and_chat_read_the_run(recorded) -> None:
    folder, env, run_id = recorded
    positions = json.loads(
        arena("positions", "--run", run_id, "--json", cwd=folder, env=env).stdout
    )
    # Buy-and-hold still holds its six coins at the end, each with its exit plan.
    held = [p for p in positions if p["agent"] == "hodl"]
    assert sorted(p["coin"] for p in held) == ["BNB", "BTC", "DOGE", "ETH", "SOL", "XRP"]
    assert all(p["stop_loss"] is not None and p["side"] == "long" for p in held)
    trades = json.loads(arena("trades", "--run", run_id, "--json", cwd=folder, env=env).stdout)
    assert trades, "the trend baseline closes trades on this data"
    assert all(t["agent"] == "trend" and t["exit_reason"] for t in trades)
    assert all(
        t["net_pnl_usd"]
        == pytest.approx(
            t["gross_pnl_usd"] - t["entry_fee_usd"] - t["exit_fee_usd"] - t["funding_usd"]
        )
        for t in trades
    )
    # Baselines call no model: the chat holds nothing, and says so.
    chat = arena("chat", "--run", run_id, cwd=folder, env=env)
    assert chat.exit_code == 0 and "no model calls recorded" in chat.stdout


def test_unknown_run_is_one_clear_line(recorded) -> None:
    folder, env, _ = recorded
    result = arena("trades", "--run", "nope", cwd=folder, env=env)
    assert result.exit_code == 2
    assert "no run 'nope'" in result.stderr and "Traceback" not in result.stderr


def test_backtest_replays_the_candle_cache(tmp_path: Path, db_url: str) -> None:
    data = write_sample_data(tmp_path / "sample", days=12)
    url = db_url
    engine = make_engine(url)
    upgrade(url, engine=engine)
    cache = CandleCache(engine)
    for coin in ("BTC", "ETH"):
        frame = load_candles(data / f"{coin}_USDT-5m.csv.gz")
        cache.save(exchange="binanceusdm", symbol=f"{coin}/USDT:USDT", timeframe="5m", frame=frame)

    result = arena(
        "backtest",
        "--data",
        "cache:binanceusdm",
        "--agent",
        "hodl=baseline:buy_and_hold",
        "--json",
        cwd=tmp_path,
        env={"DATABASE_URL": url},
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["symbols"] == ["BTC", "ETH"]
    assert summary["cycles"] > 0
    missing = arena(
        "backtest",
        "--data",
        "cache:okx",
        "--agent",
        "h=baseline:buy_and_hold",
        cwd=tmp_path,
        env={"DATABASE_URL": url},
    )
    assert missing.exit_code == 2
    assert "arena data download --exchange okx" in missing.stderr


def test_start_without_a_key_gives_an_offline_first_look_on_labelled_sample_data(
    tmp_path: Path,
) -> None:
    # No exchange to download from (a closed loopback port): the sample data is the fallback.
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}",
            "EXCHANGE_API_URL": f"http://127.0.0.1:{closed.getsockname()[1]}",
        }
        result = arena("start", cwd=tmp_path, env=env)
    assert result.exit_code == 0, result.stderr
    assert "No model API key is set" in result.stderr
    assert SAMPLE_LABEL in result.stdout
    assert "buy_and_hold" in result.stdout and "ema_trend" in result.stdout
    assert "MODELSCOPE_API_KEY" in result.stdout  # how to bring a model in
    assert "arena serve --run backtest-" in result.stdout  # how to see it in the dashboard
    assert (tmp_path / "data" / "sample-synthetic" / "README.txt").is_file()
