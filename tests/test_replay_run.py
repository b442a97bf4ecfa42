"""`arena backtest --replay-run RUN_ID` replays one recorded run exactly, from its own calls.

Run A (live) gets answers and failures (a 503, a timeout, a 429). Run B over the same window is
answered everywhere, differently: at A's first failed cycle it asks A's very prompt, and its
answer replaces A's failure marker in the answer cache (that is what `cached` is for). A plain
`--llm-mode replay` of A then trades there with B's answer and goes B's way; `--replay-run A`
holds where A held and reproduces A: the same leaderboard to the cent, the same decisions, the
same failed cycles, with no request sent and no API key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.arena_cli import ArenaRun, arena
from tests.conftest import shared_data
from tests.fakes.openai_server import FakeOpenAIServer, Reply, hang, server_error, too_fast
from tests.fakes.traders import contrarian_trader, trend_trader

TREND_MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"
CONTRA_MODEL = "Qwen/Qwen3-Coder-480B-A35B-Instruct"
AGENTS = (f"trend=modelscope:{TREND_MODEL}", f"contra=modelscope:{CONTRA_MODEL}")
# Two hours of 5-minute cycles, both ends included.
START, END, CYCLES = "2025-10-20T00:00", "2025-10-20T02:00", 25
# Run A's failures, by agent and cycle (each cycle sends one request per agent: no retries).
# The 429s come last: their cooldown is on the wall clock, so a 429 earlier would hold a number
# of later cycles that depends on the machine's speed.
A_FAILURES: Mapping[str, Mapping[int, Callable[[], Reply]]] = {
    TREND_MODEL: {0: server_error, 6: hang, CYCLES - 1: too_fast},
    CONTRA_MODEL: {3: server_error, CYCLES - 1: too_fast},
}
A_FAILED = {("trend", 0), ("trend", 6), ("trend", 24), ("contra", 3), ("contra", 24)}


def _scripted_run_a() -> Callable[[dict[str, Any]], str | Reply]:
    """Trend and contrarian traders that fail at the cycles of `A_FAILURES`."""
    traders = {TREND_MODEL: trend_trader, CONTRA_MODEL: contrarian_trader}
    asked: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def respond(request: dict[str, Any]) -> str | Reply:
        model = str(request["model"])
        with lock:
            cycle = asked[model]
            asked[model] += 1
        failure = A_FAILURES[model].get(cycle)
        return failure() if failure is not None else traders[model](request)

    return respond


def _swapped(request: dict[str, Any]) -> str:
    """Run B's model: every prompt answered otherwise than in run A (the traders swapped)."""
    trader = contrarian_trader if request["model"] == TREND_MODEL else trend_trader
    return trader(request)


@pytest.fixture
def llm_a() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer("modelscope", responder=_scripted_run_a()) as server:
        yield server


@pytest.fixture
def llm_b() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer("modelscope", responder=_swapped) as server:
        yield server


def _backtest(database: Path, *options: str, base_url: str = "", key: bool = True) -> ArenaRun:
    agents = [arg for spec in AGENTS for arg in ("--agent", spec)]
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "MODELSCOPE_BASE_URL": base_url or "http://127.0.0.1:9/v1",
        # A failed request is not retried (each cycle sends exactly one), and a hung one ends
        # after 5 s: far more than any answer of the fake takes, even on a loaded machine.
        "LLM_MAX_RETRIES": "0",
        "LLM_TIMEOUT_S": "5",
    }
    if key:
        env["MODELSCOPE_API_KEY"] = "ms-test-not-a-real-key"
    return arena(
        "backtest",
        "--data",
        str(shared_data("market")),
        "--start",
        START,
        "--end",
        END,
        "--interval",
        "5m",
        *agents,
        *options,
        "--json",
        env=env,
        cwd=database.parent,
    )


def _summary(run: ArenaRun) -> dict[str, Any]:
    assert run.exit_code == 0, run.stderr
    summary: dict[str, Any] = json.loads(run.stdout)
    return summary


def _results(summary: dict[str, Any]) -> dict[str, Any]:
    """The run's leaderboard without its id and without where the answers came from."""
    agents = [
        {k: v for k, v in agent.items() if k not in ("llm_calls", "cache_hits")}
        for agent in summary["agents"]
    ]
    return {**summary, "agents": agents, "run_id": None}


# The standing `arena leaderboard` shows, without where the answers came from.
STANDING = (
    "name",
    "final_equity",
    "return_pct",
    "sharpe",
    "max_drawdown_pct",
    "trades",
    "win_rate",
    "fees_paid",
    "funding_paid",
    "parse_failures",
    "rejected_decisions",
    "failed_cycles",
    "open_positions",
    "last_at",
)


def _standing(database: Path, run_id: str) -> list[dict[str, Any]]:
    """`arena leaderboard --run RUN_ID --json`'s agents, money in cents."""
    board = arena(
        "leaderboard", "--run", run_id, "--json", env={"DATABASE_URL": f"sqlite:///{database}"}
    )
    assert board.exit_code == 0, board.stderr
    return [
        {
            name: round(row[name], 2) if isinstance(row[name], float) else row[name]
            for name in STANDING
        }
        for row in json.loads(board.stdout)["agents"]
    ]


def _query(database: Path, sql: str, run_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(database) as connection:
        return connection.execute(sql, (run_id,)).fetchall()


def _decisions(database: Path, run_id: str) -> list[tuple[Any, ...]]:
    return _query(
        database,
        "SELECT a.name, c.scheduled_at, d.coin, d.signal, d.quantity, d.outcome, "
        "d.filled_quantity FROM decision d JOIN cycle c ON c.id = d.cycle_id "
        "JOIN agent a ON a.id = c.agent_id WHERE a.run_id = ? "
        "ORDER BY a.name, c.scheduled_at, d.id",
        run_id,
    )


def _failed_cycles(database: Path, run_id: str) -> set[tuple[str, int]]:
    """(agent, cycle number) of every cycle whose call got no answer."""
    rows = _query(
        database,
        "SELECT a.name, c.scheduled_at, c.status FROM cycle c JOIN agent a ON a.id = c.agent_id "
        "WHERE a.run_id = ? ORDER BY a.name, c.scheduled_at",
        run_id,
    )
    numbers: dict[str, int] = defaultdict(int)
    failed = set()
    for name, _at, status in rows:
        if status == "failed":
            failed.add((name, numbers[name]))
        numbers[name] += 1
    return failed


def test_replay_run_reproduces_its_run_where_a_later_run_answered_its_failures(
    llm_a: FakeOpenAIServer, llm_b: FakeOpenAIServer, tmp_path: Path
) -> None:
    database = tmp_path / "arena.db"
    run_a = _summary(_backtest(database, "--llm-mode", "live", base_url=llm_a.base_url))
    assert llm_a.request_count == 2 * CYCLES
    assert _failed_cycles(database, run_a["run_id"]) == A_FAILED
    assert all(agent["trades"] > 0 for agent in run_a["agents"])

    run_b = _summary(_backtest(database, "--llm-mode", "live", base_url=llm_b.base_url))
    assert llm_b.request_count == 2 * CYCLES
    assert _failed_cycles(database, run_b["run_id"]) == set()
    # B asked A's first prompt of each agent (same start, same empty account): its answer to
    # trend's, which A's 503 left unanswered, is now the cache's answer to that prompt.
    first_prompts = [request.body["messages"] for request in llm_b.requests[:2]]
    assert all(request.body["messages"] in first_prompts for request in llm_a.requests[:2]), (
        "run B's first prompts are run A's"
    )

    plain = _summary(_backtest(database, "--llm-mode", "replay", key=False))
    assert _results(plain) != _results(run_a), "the cache replays B's answer where A failed"
    assert _failed_cycles(database, plain["run_id"]) != A_FAILED

    exact = _summary(_backtest(database, "--replay-run", run_a["run_id"], key=False))
    assert (llm_a.request_count, llm_b.request_count) == (2 * CYCLES, 2 * CYCLES), (
        "a replay sends nothing"
    )
    assert _results(exact) == _results(run_a)
    assert _standing(database, exact["run_id"]) == _standing(database, run_a["run_id"])
    assert _standing(database, plain["run_id"]) != _standing(database, run_a["run_id"])
    assert _decisions(database, exact["run_id"]) == _decisions(database, run_a["run_id"])
    assert _failed_cycles(database, exact["run_id"]) == A_FAILED
    assert all(
        (agent["llm_calls"], agent["cache_hits"]) == (0, CYCLES) for agent in exact["agents"]
    )
    outcomes = _query(
        database,
        "SELECT DISTINCT l.outcome FROM llm_call l JOIN agent a ON a.id = l.agent_id "
        "WHERE a.run_id = ?",
        exact["run_id"],
    )
    assert {outcome for (outcome,) in outcomes} == {"cache_hit", "replayed_failure"}

    # The replay of the replay is A again: its rows are a record like any other.
    again = _summary(
        _backtest(database, "--llm-mode", "replay", "--replay-run", exact["run_id"], key=False)
    )
    assert _results(again) == _results(run_a)
    assert _failed_cycles(database, again["run_id"]) == A_FAILED


def test_replay_run_refuses_an_unknown_run_a_mode_other_than_replay_and_a_prompt_never_sent(
    llm_a: FakeOpenAIServer, tmp_path: Path
) -> None:
    database = tmp_path / "arena.db"
    run_a = _summary(_backtest(database, "--llm-mode", "live", base_url=llm_a.base_url))
    run_id = run_a["run_id"]

    unknown = _backtest(database, "--replay-run", "no-such-run", key=False)
    assert unknown.exit_code != 0
    assert "--replay-run no-such-run: no run with that id" in unknown.stderr

    live = _backtest(database, "--llm-mode", "live", "--replay-run", run_id)
    assert live.exit_code != 0
    assert "goes with --llm-mode replay" in live.stderr

    # Another window asks prompts run A never sent: the run stops and names what is missing.
    shifted = arena(
        "backtest",
        "--data",
        str(shared_data("market")),
        "--start",
        "2025-10-20T00:05",
        "--end",
        END,
        "--interval",
        "5m",
        "--agent",
        AGENTS[0],
        "--replay-run",
        run_id,
        "--json",
        env={"DATABASE_URL": f"sqlite:///{database}"},
        cwd=tmp_path,
    )
    assert shifted.exit_code != 0
    message = " ".join(shifted.stderr.split())
    assert f"replay of run {run_id}: that run never sent agent trend's prompt" in message
    assert "prompt hash" in message and "cycle at 2025-10-20T00:05:00+00:00" in message

    renamed = arena(
        "backtest",
        "--data",
        str(shared_data("market")),
        "--start",
        START,
        "--end",
        END,
        "--interval",
        "5m",
        "--agent",
        f"other=modelscope:{TREND_MODEL}",
        "--replay-run",
        run_id,
        env={"DATABASE_URL": f"sqlite:///{database}"},
        cwd=tmp_path,
    )
    assert renamed.exit_code != 0
    assert "that run has no agent other (its agents: contra, trend)" in " ".join(
        renamed.stderr.split()
    )
