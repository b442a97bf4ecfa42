"""Reports on a run whose agents are registered but have no cycle yet (the exchange was down).

The README's path: a key in `.env`, then `bash scripts/run.sh` (`arena start`, which runs the
daemon: one `arena run --once` cycle at a time). With the exchange unreachable the daemon
registers its agents and records no account snapshot; every report must then list the agents
with "no cycle yet" and exit 0, not crash.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import models
from app.db.session import make_engine
from app.reports import equity_frame, leaderboard
from tests.arena_cli import arena


@pytest.fixture
def refused_url() -> Iterator[str]:
    """Yield the URL of a loopback port that refuses connections, reserved for the whole test.

    The socket stays bound without listening, so nothing else can take the port meanwhile.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def registered_without_cycle(tmp_path: Path, refused_url: str) -> str:
    """Follow the README with the exchange down; return the database URL it leaves behind."""
    url = f"sqlite:///{tmp_path / 'data' / 'arena.db'}"
    # The README: cp .env.example .env and put the key in; the exchange is not reachable, and
    # the daemon gives up on it at once (by default it waits EXCHANGE_STARTUP_RETRY_S for it).
    (tmp_path / ".env").write_text(
        f"MODELSCOPE_API_KEY=ms-test-0000\nDATABASE_URL={url}\nEXCHANGE_API_URL={refused_url}\n"
        "EXCHANGE_STARTUP_RETRY_S=0\n",
        encoding="utf-8",
    )

    # `arena start` runs this cycle after cycle; the dashboard is not what is tested here.
    arena("run", "--once", "--no-serve")

    engine = make_engine(url)
    with engine.connect() as connection:
        agents = connection.scalars(select(models.Agent.name)).all()
        snapshots = connection.execute(select(func.count(models.AccountSnapshot.id))).scalar_one()
    engine.dispose()
    assert agents == ["qwen"] and snapshots == 0, "the daemon registers its agent, no cycle"
    return url


def test_the_leaderboard_lists_agents_without_a_cycle(registered_without_cycle: str) -> None:
    result = arena("leaderboard")

    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    row = next(line for line in result.stdout.splitlines() if "qwen" in line)
    assert "no cycle yet" in row and "10,000.00" in row


def test_the_leaderboard_json_of_agents_without_a_cycle(registered_without_cycle: str) -> None:
    result = arena("leaderboard", "--json")

    assert result.exit_code == 0, result.stderr
    (agent,) = json.loads(result.stdout)["agents"]
    assert agent["name"] == "qwen" and agent["last_at"] is None
    assert agent["final_equity"] == 10_000.0 and agent["sharpe"] is None
    assert agent["sharpe_note"] == "no cycle yet"


@pytest.mark.parametrize("command", ["positions", "trades", "chat"])
def test_every_listing_reads_a_run_without_a_cycle(
    registered_without_cycle: str, command: str
) -> None:
    result = arena(command)

    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_the_report_functions_take_agents_without_a_snapshot(
    registered_without_cycle: str,
) -> None:
    engine = make_engine(registered_without_cycle)

    (row,) = leaderboard(engine, "live")
    frame = equity_frame(engine, "live")

    assert (row.name, row.final_equity, row.return_pct, row.last_at) == (
        "qwen",
        10_000.0,
        0.0,
        None,
    )
    assert list(frame.columns) == ["qwen"] and frame.empty
