"""What a new user meets in the first hour: flags, exit codes and messages of the command line,
the listings' details, and the packaging. Each test failed before its fix."""

from __future__ import annotations

import json
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app import __version__
from app.db.candles import CandleCache
from app.db.migrate import upgrade
from app.db.repository import AgentIdentity, SqlCycleStore
from app.db.session import make_engine
from app.decisions import TradeDecision
from app.domain import (
    AccountState,
    AccountView,
    ChatMessage,
    ChatResult,
    ExitPlan,
    Fill,
    Position,
    candles_from_rows,
)
from app.market.sample import write_sample_data
from app.ports import AgentCycleRecord, DecisionRecord, StrategyAnswer
from tests.arena_cli import arena

REPO_ROOT = Path(__file__).resolve().parents[1]
AT = datetime(2025, 10, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    url = f"sqlite:///{tmp_path / 'arena.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    engine = make_engine(url)
    upgrade(url, engine=engine)
    return engine


# -- flags and exit codes ------------------------------------------------------------------------


def test_version_is_listed_in_the_help_and_answers() -> None:
    assert "--version" in arena("--help").stdout

    result = arena("--version")

    assert (result.exit_code, result.stdout.strip()) == (0, f"arena {__version__}")


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["backtest", "--data", "nowhere", "--interval", "5"], "--interval"),
        (["data", "download", "--since", "2025-10-01", "--timeframe", "5"], "--timeframe"),
    ],
)
def test_a_timeframe_without_a_unit_is_one_line_and_exit_2(args: list[str], option: str) -> None:
    result = arena(*args)

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {option} '5' is not a timeframe: use a positive number and a unit (m, h, d), "
        "e.g. 5m, 1h or 1d"
    ]


def test_quota_probe_exits_non_zero_when_no_probe_succeeded(db: Engine) -> None:
    result = arena("quota", "--probe")

    assert result.exit_code == 2
    assert "no_key" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: no probe succeeded: no API key")


def test_a_missing_database_driver_names_the_extra_and_never_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # pg8000 is not installed (and never will be): the driver is missing whatever the machine.
    monkeypatch.setenv("DATABASE_URL", "postgresql+pg8000://arena:hunter2@localhost/arena")

    result = arena("leaderboard")

    assert result.exit_code == 2
    assert "hunter2" not in result.stdout + result.stderr
    assert "pip install '.[postgres]'" in result.stderr
    assert "arena:***@localhost" in result.stderr


def test_arena_config_never_shows_the_database_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://arena:hunter2@localhost/arena")

    result = arena("config", "--json")

    assert result.exit_code == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert json.loads(result.stdout)["database"]["url"] == "postgresql://arena:***@localhost/arena"


def test_a_database_folder_that_cannot_be_created_names_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{blocker}/arena/arena.db")

    result = arena("leaderboard")

    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: DATABASE_URL 'sqlite:///{blocker}/arena/arena.db': the folder")
    assert "cannot be created" in line


def test_a_missing_config_file_given_by_option_names_the_option() -> None:
    result = arena("--config", "nope.toml", "config")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --config nope.toml: no such file")
    assert "ARENA_CONFIG" not in result.stderr


def test_arena_config_says_which_agents_can_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AGENTS", "qwen=modelscope:Qwen/A,ds=deepseek:deepseek-chat,hodl=baseline:buy_and_hold"
    )
    monkeypatch.setenv("DEEPSEEK_API_KEY", "sk-test-0000")

    text = arena("config").stdout
    verdict = json.loads(arena("config", "--json").stdout)["verdict"]

    assert "agent qwen: not ready, needs MODELSCOPE_API_KEY: not set" in text
    assert "agent ds: ready, DEEPSEEK_API_KEY: set" in text
    assert "agent hodl: ready, rule-based, no key" in text
    assert [item["ready"] for item in verdict["agents"]] == [False, True, True]
    assert "live arena" in verdict["start"]


# -- run ids, positions and chat ----------------------------------------------------------------


def test_backtest_json_carries_the_run_id_that_the_other_commands_take(tmp_path: Path) -> None:
    data = write_sample_data(tmp_path / "sample", days=10)
    end = datetime(2025, 11, 3, 21, 0, tzinfo=UTC)

    result = arena(
        "backtest",
        "--data",
        str(data),
        "--symbols",
        "BTC,ETH",
        "--agent",
        "trend=baseline:ema_trend",
        "--start",
        (end - timedelta(hours=6)).isoformat(),
        "--end",
        end.isoformat(),
        "--interval",
        "5m",
        "--json",
    )

    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    run_id = summary["run_id"]
    # On synthetic sample data, and too short for a Sharpe ratio (6 hours of 5m cycles).
    assert "SYNTHETIC" in run_id and summary["synthetic"] is True
    (agent,) = summary["agents"]
    assert agent["sharpe"] is None
    assert agent["sharpe_note"] == "needs 7 days of returns, has 6 hours"
    board = arena("leaderboard", "--run", run_id, "--json")
    assert json.loads(board.stdout)["run_id"] == run_id
    assert arena("chat", "--run", run_id).exit_code == 0


def record_trading_cycle(engine: Engine) -> None:
    """One cycle of agent qwen: a BTC long filled at 110,050 and an ETH entry refused."""
    store = SqlCycleStore(engine, run_id="live")
    store.register_agents([AgentIdentity("qwen", "modelscope", "Qwen/A", (), 10_000.0)], at=AT)
    btc = TradeDecision(
        coin="BTC",
        signal="buy_to_enter",
        quantity=0.05,
        leverage=10,
        profit_target=115_000.0,
        stop_loss=107_500.0,
        confidence=0.72,
        justification="4h EMA20 above EMA50 and MACD turning up",
    )
    eth = TradeDecision(coin="ETH", signal="sell_to_enter", quantity=2.0, leverage=50)
    position = Position(
        coin="BTC",
        side="long",
        quantity=0.05,
        entry_price=110_050.0,
        leverage=10,
        margin_usd=550.25,
        liquidation_price=99_595.25,
        opened_at=AT,
        exit_plan=ExitPlan(profit_target=115_000.0, stop_loss=107_500.0),
        confidence=0.72,
        justification=btc.justification,
        entry_fee_usd=2.48,
    )
    books = AccountState(
        starting_cash_usd=10_000.0,
        cash_usd=10_000.0 - 550.25 - 2.48,
        fees_paid_usd=2.48,
        positions={"BTC": position},
    )
    fill = Fill(
        coin="BTC",
        side="buy",
        quantity=0.05,
        price=110_050.0,
        reference_price=110_039.0,
        fee_usd=2.48,
        reason="entry",
        filled_at=AT,
    )
    record = AgentCycleRecord(
        agent="qwen",
        scheduled_at=AT,
        started_at=AT,
        finished_at=AT,
        invocation=1,
        status="ok",
        books=books,
        view=AccountView(
            at=AT,
            starting_cash_usd=10_000.0,
            cash_usd=books.cash_usd,
            margin_usd=550.25,
            unrealized_pnl_usd=0.0,
            realized_pnl_usd=0.0,
            fees_paid_usd=2.48,
            funding_paid_usd=0.0,
            positions=books.positions,
        ),
        prompt_version="v1",
        messages=(
            ChatMessage("system", "You are a trader."),
            ChatMessage("user", "BTC price 110039.0 [closed candles] ..."),
        ),
        answer=StrategyAnswer(
            decisions=(btc, eth),
            chat=ChatResult(text='{"BTC": {...}}', provider="modelscope", model="Qwen/A"),
        ),
        decisions=(
            DecisionRecord(btc, "executed", filled_quantity=0.05),
            DecisionRecord(eth, "rejected", "leverage 50 is above the limit of 20"),
        ),
        fills=(fill,),
    )
    assert store.record_cycle(record)


def test_positions_show_the_last_price_and_unrealized_pnl_in_plain_numbers(db: Engine) -> None:
    """Long 0.05 BTC from 110,050; the last closed candle the daemon cached closes at
    111,250.5: unrealized PnL (111,250.5 - 110,050) x 0.05 = +60.025 USD."""
    record_trading_cycle(db)
    candle_open_ms = int((AT + timedelta(minutes=30)).timestamp() * 1000)
    import numpy as np

    CandleCache(db).save(
        exchange="hyperliquid",
        symbol="BTC/USDC:USDC",
        timeframe="3m",
        frame=candles_from_rows(
            np.array([candle_open_ms], dtype=np.int64),
            np.array([[111_000.0, 111_300.0, 110_900.0, 111_250.5, 12.0]]),
        ),
    )

    table = arena("positions")
    listed = json.loads(arena("positions", "--json").stdout)

    assert table.exit_code == 0, table.stderr
    assert "111,250.50" in table.stdout and "+60.03" in table.stdout
    assert "e+" not in table.stdout
    assert "cached from hyperliquid, 2025-10-20 12:33 UTC" in table.stdout
    (btc,) = listed
    assert btc["price"] == 111_250.5 and btc["unrealized_pnl_usd"] == pytest.approx(60.025)


def test_chat_shows_each_decision_in_full_and_filters(db: Engine) -> None:
    record_trading_cycle(db)

    text = arena("chat").stdout
    executed = arena("chat", "--outcome", "executed", "--coin", "btc").stdout
    nothing = arena("chat", "--coin", "DOGE").stdout
    with_prompt = arena("chat", "--prompt").stdout
    payload = json.loads(arena("chat", "--json", "--prompt").stdout)

    assert "BTC: buy_to_enter 0.05 10x @ 110,050.00" in text
    assert "target 115,000.00 stop 107,500.00 confidence 0.72 → executed" in text
    assert "why: 4h EMA20 above EMA50 and MACD turning up" in text
    assert "ETH: sell_to_enter 2 50x → rejected (leverage 50 is above the limit of 20)" in text
    assert "BTC: buy_to_enter" in executed and "ETH" not in executed
    assert "no model calls matching the filters" in nothing
    assert "You are a trader." in with_prompt and "[closed candles]" in with_prompt
    (entry,) = payload
    assert [m["role"] for m in entry["prompt"]] == ["system", "user"]
    assert entry["decisions"][0]["confidence"] == 0.72
    assert entry["decisions"][0]["fill_price"] == 110_050.0


def test_chat_names_an_unknown_agent(db: Engine) -> None:
    record_trading_cycle(db)

    result = arena("chat", "--agent", "nobody")

    assert result.exit_code == 2 and "no agent 'nobody' in run live" in result.stderr


# -- packaging -----------------------------------------------------------------------------------


def test_the_license_is_an_spdx_expression_for_current_setuptools() -> None:
    """A `license = { text = ... }` table makes setuptools >= 77 print ~30 lines of warnings."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    assert project["project"]["license"] == "MIT"
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_arena_shared_data_may_name_the_shared_folder_or_its_data_folder(tmp_path: Path) -> None:
    from tests.conftest import shared_data_root

    shared = tmp_path / "shared"
    (shared / "data" / "market").mkdir(parents=True)

    assert shared_data_root(str(shared)) == shared / "data"
    assert shared_data_root(str(shared / "data")) == shared / "data"
