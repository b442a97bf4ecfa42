"""What the LLM records promise, end to end through `arena` (in-process) and the fake servers.

- A failed run never spoils the answer cache: a good run's replay reproduces it exactly, also
  after a later live run over an overlapping window was answered 429 for every call.
- `llm_calls` counts requests sent; calls held because no model could be asked are counted apart
  (`held_quota`), shown in the leaderboard, and `arena chat` shows them with their reason and
  the model they were for.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.arena_cli import arena
from tests.conftest import shared_data
from tests.fakes.openai_server import UNLIMITED_QUOTA, FakeOpenAIServer, rate_limited
from tests.fakes.traders import by_model, trend_trader

MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
AGENT = f"trend=modelscope:{MODEL}"
# Two days of 5-minute cycles, both ends included; the 429 run covers the first day of them.
START, END, CYCLES = "2025-10-20T00:00", "2025-10-22T00:00", 2 * 288 + 1
OVERLAP_END, OVERLAP_CYCLES = "2025-10-21T00:00", 288 + 1


@pytest.fixture
def good_llm() -> Iterator[FakeOpenAIServer]:
    # More requests than the fake's default daily quota (500): with the quota left at 0 the
    # adapter benches the model for the day, as it should.
    with FakeOpenAIServer(
        "modelscope",
        responder=by_model({MODEL: trend_trader}),
        requests_limit=UNLIMITED_QUOTA,
        model_requests_limit=UNLIMITED_QUOTA,
    ) as server:
        yield server


@pytest.fixture
def quota_gone_llm() -> Iterator[FakeOpenAIServer]:
    """A ModelScope that answers every request 429 "Request limit exceeded." (quota at 0)."""
    with FakeOpenAIServer("modelscope", responder=lambda _body: rate_limited()) as server:
        yield server


def _backtest(database: Path, base_url: str, *, end: str, mode: str, cwd: Path) -> dict[str, Any]:
    result = arena(
        "backtest",
        "--data",
        str(shared_data("market")),
        "--start",
        START,
        "--end",
        end,
        "--interval",
        "5m",
        "--agent",
        AGENT,
        "--llm-mode",
        mode,
        "--json",
        env={
            "DATABASE_URL": f"sqlite:///{database}",
            "MODELSCOPE_API_KEY": "ms-test-not-a-real-key",
            "MODELSCOPE_BASE_URL": base_url,
        },
        cwd=cwd,
    )
    assert result.exit_code == 0, result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def _results(summary: dict[str, Any]) -> dict[str, Any]:
    """The run's results without its id and without where the answers came from."""
    agents = [
        {k: v for k, v in agent.items() if k not in ("llm_calls", "cache_hits")}
        for agent in summary["agents"]
    ]
    return {**summary, "agents": agents, "run_id": None}


def _decisions(database: Path, run_id: str) -> list[tuple[Any, ...]]:
    """Every decision of the run in order: what a replay must reproduce exactly."""
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT c.scheduled_at, d.coin, d.signal, d.quantity, d.outcome, d.filled_quantity "
            "FROM decision d JOIN cycle c ON c.id = d.cycle_id JOIN agent a ON a.id = c.agent_id "
            "WHERE a.run_id = ? ORDER BY c.scheduled_at, d.id",
            (run_id,),
        ).fetchall()


@pytest.mark.slow
def test_a_failed_live_run_never_spoils_the_replay_of_a_good_run(
    good_llm: FakeOpenAIServer, quota_gone_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    """good run -> its replay -> a 429 live run over the first day -> the good run's replay.

    The 429 run asks the same first prompt as the good run (same start, same empty account), so
    before the fix its failure marker replaced the good answer and the second replay held where
    the good run had traded. Its calls: the first request answered 429 ("quota at 0") benches the
    model for the day, so 1 request is sent and the other 288 cycles are held.
    """
    database = tmp_path / "arena.db"
    good = _backtest(database, good_llm.base_url, end=END, mode="live", cwd=tmp_path)
    assert good_llm.request_count == CYCLES
    (agent,) = good["agents"]
    assert agent["trades"] > 0 and agent["llm_calls"] == CYCLES

    replay = _backtest(database, good_llm.base_url, end=END, mode="replay", cwd=tmp_path)
    assert _results(replay) == _results(good)
    assert _decisions(database, replay["run_id"]) == _decisions(database, good["run_id"])

    failed = _backtest(
        database, quota_gone_llm.base_url, end=OVERLAP_END, mode="live", cwd=tmp_path
    )
    assert quota_gone_llm.request_count == 1
    (starved,) = failed["agents"]
    assert starved["trades"] == 0

    again = _backtest(database, good_llm.base_url, end=END, mode="replay", cwd=tmp_path)
    assert good_llm.request_count == CYCLES, "a replay never calls the model"
    assert _results(again) == _results(good)
    assert _decisions(database, again["run_id"]) == _decisions(database, good["run_id"])
    (replayed,) = again["agents"]
    assert (replayed["llm_calls"], replayed["cache_hits"]) == (0, CYCLES)


def test_a_quota_starved_agent_shows_one_request_its_held_calls_and_why(
    quota_gone_llm: FakeOpenAIServer, tmp_path: Path
) -> None:
    """Two hours of 5-minute cycles (25) against a ModelScope whose quota is used up.

    The first call sends one request (429, model remainder 0) and benches the model for the
    day; the 24 calls after it send nothing. So: LLM calls 1 (the server received 1), held:
    quota 24. Before the fix the leaderboard said 25 LLM calls, and `arena chat` said "no model
    calls recorded" because the failed rows have no `model`.
    """
    database = tmp_path / "arena.db"
    env = {"DATABASE_URL": f"sqlite:///{database}"}
    summary = _backtest(
        database, quota_gone_llm.base_url, end="2025-10-20T02:00", mode="live", cwd=tmp_path
    )
    run_id = summary["run_id"]
    assert quota_gone_llm.request_count == 1
    (agent,) = summary["agents"]
    assert agent["llm_calls"] == 1, "llm_calls counts the requests sent"

    board = arena("leaderboard", "--run", run_id, "--json", env=env, cwd=tmp_path)
    assert board.exit_code == 0, board.stderr
    (row,) = json.loads(board.stdout)["agents"]
    assert (row["llm_calls"], row["held_quota"], row["held_not_served"]) == (1, 24, 0)

    table = arena("leaderboard", "--run", run_id, env={**env, "COLUMNS": "80"}, cwd=tmp_path)
    assert table.exit_code == 0, table.stderr
    assert "quota 24" in table.stdout, "a quota-starved agent is visible even at 80 columns"

    with sqlite3.connect(database) as connection:
        rows = connection.execute(
            "SELECT provider, model_requested, outcome FROM llm_call ORDER BY id"
        ).fetchall()
    assert len(rows) == 25
    assert rows[0] == ("modelscope", MODEL, "rate_limited")
    assert set(rows[1:]) == {("modelscope", MODEL, "held_quota")}

    chat = arena("chat", "--run", run_id, "--limit", "3", env=env, cwd=tmp_path)
    assert chat.exit_code == 0, chat.stderr
    assert "no model calls" not in chat.stdout
    assert chat.stdout.count("held_quota") == 3
    assert MODEL in chat.stdout and "skipped until" in chat.stdout

    first = arena("chat", "--run", run_id, "--outcome", "rate_limited", "--json", env=env)
    (entry,) = json.loads(first.stdout)
    assert (entry["model"], entry["answered"]) == (MODEL, False)
    assert "rate-limited or out of quota" in entry["error"]
