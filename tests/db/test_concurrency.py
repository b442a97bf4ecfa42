"""Several processes writing one PostgreSQL arena at once: every run whole, no deadlock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.db import models
from app.db.session import make_engine
from app.market.sample import write_sample_data

REPO_ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 8


@pytest.mark.slow
def test_eight_backtests_at_once_into_one_fresh_postgres_database(
    postgres_url: str, tmp_path: Path
) -> None:
    """Eight `arena backtest` processes start together on an unmigrated schema: they migrate it
    one at a time (an advisory lock), then write their runs side by side. Each run holds its
    2 agents x the cycles it reports, with one account snapshot per agent-cycle."""
    data = write_sample_data(tmp_path / "sample", days=10)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    env.update(PYTHONPATH=str(REPO_ROOT), DATABASE_URL=postgres_url)
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "app",
                "backtest",
                "--data",
                str(data),
                "--agent",
                "hodl=baseline:buy_and_hold",
                "--agent",
                f"rnd=baseline:random@{seed}/6",
                "--interval",
                "4h",
                "--json",
            ],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(PROCESSES)
    ]
    outputs = [process.communicate(timeout=900) for process in processes]
    for process, (_out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
        assert "deadlock" not in err.lower(), err
    summaries = [json.loads(out) for out, _err in outputs]
    runs = {summary["run_id"]: summary["cycles"] for summary in summaries}
    assert len(runs) == PROCESSES

    with make_engine(postgres_url).connect() as connection:
        agent, cycle = models.Agent, models.Cycle
        cycles = dict(
            connection.execute(
                select(agent.run_id, func.count(cycle.id))
                .join(cycle, cycle.agent_id == agent.id)
                .group_by(agent.run_id)
            ).all()
        )
        snapshots = connection.execute(select(func.count(models.AccountSnapshot.id))).scalar_one()
    assert cycles == {run: 2 * count for run, count in runs.items()}
    assert snapshots >= sum(cycles.values())
