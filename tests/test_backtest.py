"""`arena backtest` end to end: real data, the real CLI, two fake LLM agents and the baselines.

The two backtests of the replay test run as real processes (marked `slow`); the leaderboard
that reads their run and the refusal run `arena` in-process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.arena_cli import arena
from tests.conftest import shared_data
from tests.fakes.openai_server import UNLIMITED_QUOTA, FakeOpenAIServer
from tests.fakes.traders import by_model, contrarian_trader, trend_trader

REPO_ROOT = Path(__file__).resolve().parents[1]
TREND_MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
CONTRA_MODEL = "Qwen/Qwen3-Next-80B-A3B-Instruct"
AGENTS = (
    f"trend=modelscope:{TREND_MODEL}",
    f"contra=modelscope:{CONTRA_MODEL}",
    "hodl=baseline:buy_and_hold",
    "ema=baseline:ema_trend",
)
# The README's `--json` shape: exactly these keys, nothing else.
SUMMARY_KEYS = {"run_id", "synthetic", "start", "end", "cycles", "symbols", "benchmark", "agents"}
AGENT_KEYS = {
    "name",
    "final_equity",
    "return_pct",
    "sharpe",
    "sharpe_note",
    "max_drawdown_pct",
    "trades",
    "win_rate",
    "fees_paid",
    "funding_paid",
    "llm_calls",
    "cache_hits",
    "parse_failures",
    "rejected_decisions",
}
# Two days of 5-minute cycles, inclusive of both ends.
START, END, CYCLES = "2025-10-20T00:00", "2025-10-22T00:00", 2 * 288 + 1


def backtest(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "backtest", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    responder = by_model({TREND_MODEL: trend_trader, CONTRA_MODEL: contrarian_trader})
    with FakeOpenAIServer(
        "modelscope",
        responder=responder,
        requests_limit=UNLIMITED_QUOTA,
        model_requests_limit=UNLIMITED_QUOTA,
    ) as server:
        yield server


@pytest.mark.slow
def test_backtest_replay_makes_no_http_call_and_gives_the_same_results(
    llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    market = shared_data("market")
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(
        PYTHONPATH=str(REPO_ROOT),
        DATABASE_URL=f"sqlite:///{tmp_path / 'arena.db'}",
        MODELSCOPE_API_KEY="ms-test-not-a-real-key",
        MODELSCOPE_BASE_URL=llm.base_url,
    )
    args = ["--data", str(market), "--start", START, "--end", END, "--interval", "5m", "--json"]
    args += [part for spec in AGENTS for part in ("--agent", spec)]

    first = backtest(*args, "--llm-mode", "cached", env=env, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    calls_made = llm.request_count
    assert calls_made == 2 * CYCLES  # one call per LLM agent per cycle, nothing retried

    report = tmp_path / "report"
    second = backtest(*args, "--llm-mode", "replay", "--report", str(report), env=env, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert llm.request_count == calls_made, "a replay must not call the model"

    # --json prints exactly one JSON object on stdout, in the README's shape.
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert set(one) == SUMMARY_KEYS
    # Each run has its own id, which `--run` takes; the data was market prices.
    assert one["run_id"] != two["run_id"] and one["run_id"].startswith("backtest-")
    assert one["synthetic"] is False
    assert all(set(agent) == AGENT_KEYS for agent in one["agents"])
    assert one["cycles"] == CYCLES
    assert one["symbols"] == ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE"]

    # The replay reproduces every result; only where the answers came from differs.
    def results(summary: dict[str, object]) -> dict[str, object]:
        agents = [
            {k: v for k, v in agent.items() if k not in ("llm_calls", "cache_hits")}
            for agent in summary["agents"]  # type: ignore[attr-defined]
        ]
        return {**summary, "agents": agents, "run_id": None}

    assert results(one) == results(two)
    by_name_one = {agent["name"]: agent for agent in one["agents"]}
    by_name_two = {agent["name"]: agent for agent in two["agents"]}
    for name in ("trend", "contra"):
        assert (by_name_one[name]["llm_calls"], by_name_one[name]["cache_hits"]) == (CYCLES, 0)
        assert (by_name_two[name]["llm_calls"], by_name_two[name]["cache_hits"]) == (0, CYCLES)
        assert by_name_one[name]["trades"] > 0, f"{name} should have traded"
        assert by_name_one[name]["fees_paid"] > 0
    for name in ("hodl", "ema"):
        assert by_name_one[name]["llm_calls"] == 0
    # Funding files were given: holding six longs for two days moves funding.
    assert by_name_one["hodl"]["funding_paid"] != 0.0

    # The report: the chart, every closed trade, and the summary with the funding note.
    assert (report / "account_value.png").stat().st_size > 10_000
    with (report / "trades.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == sum(agent["trades"] for agent in two["agents"])
    saved = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    assert saved["agents"] == two["agents"] and saved["run_id"] == two["run_id"]
    assert "funding charged from files" in saved["funding"]

    # Tokens and latency are summed per agent over the recorded calls.
    board = arena(
        "leaderboard", "--run", saved["run_id"], "--json", env={"DATABASE_URL": env["DATABASE_URL"]}
    )
    assert board.exit_code == 0, board.stderr
    usage = {agent["name"]: agent for agent in json.loads(board.stdout)["agents"]}
    assert usage["trend"]["prompt_tokens"] > 0 and usage["trend"]["completion_tokens"] > 0
    assert usage["hodl"]["prompt_tokens"] == 0


def test_replay_without_stored_answers_stops_and_says_which_prompt_is_missing(
    tmp_path: Path,
) -> None:
    market = shared_data("market")
    result = arena(
        "backtest",
        "--data",
        str(market),
        "--start",
        START,
        "--end",
        "2025-10-20T01:00",
        "--interval",
        "5m",
        "--agent",
        f"trend=modelscope:{TREND_MODEL}",
        "--llm-mode",
        "replay",
        env={"DATABASE_URL": f"sqlite:///{tmp_path / 'arena.db'}"},
    )
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "trend" in result.stderr
    assert "2025-10-20" in result.stderr
