"""`--keep`: what a window's backtest run leaves in the database after the evaluation took its
figures."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from app.config import AgentConfig, load_settings
from app.db import models, queries
from app.db.pruning import prune_run
from app.evaluation.window_run import WindowJob, data_range, run_windows_in_process
from app.evaluation.windows import plan_windows
from app.wiring import open_database
from tests.conftest import shared_data


def count(engine, model, run_id: str) -> int:  # type: ignore[no-untyped-def]
    """Return the rows of `model` that belong to the run's agents."""
    agent_ids = select(models.Agent.id).where(models.Agent.run_id == run_id)
    if model is models.Decision:
        cycles = select(models.Cycle.id).where(models.Cycle.agent_id.in_(agent_ids))
        query = select(func.count()).select_from(model).where(model.cycle_id.in_(cycles))
    else:
        query = select(func.count()).select_from(model).where(model.agent_id.in_(agent_ids))
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


@pytest.mark.parametrize("keep", ["summary", "trades", "full"])
def test_keep_leaves_the_figures_and_trades(tmp_path: Path, keep: str) -> None:
    """One two-day window at 15m (193 cycles), ema_trend and a random seed that trades."""
    settings = load_settings(env_file=None, database={"url": f"sqlite:///{tmp_path / 'k.db'}"})
    database = open_database(settings)
    job = WindowJob(
        data=(shared_data("market"),),
        agents=(
            AgentConfig.from_spec("ema=baseline:ema_trend"),
            AgentConfig.from_spec("luck=baseline:random@2"),
        ),
        interval="15m",
        keep=keep,
    )
    found, _ = data_range(settings, job, database=database)
    (result,) = run_windows_in_process(
        settings, job, plan_windows(found, days=2, count=1), database=database
    )
    assert result.run_id is not None
    engine = database.engine
    run = result.run_id
    cycles = count(engine, models.Cycle, run)
    snapshots = count(engine, models.AccountSnapshot, run)
    assert count(engine, models.Fill, run) > 0, "the trades stay whatever --keep says"
    if keep == "summary":
        assert (cycles, snapshots, count(engine, models.Decision, run)) == (0, 2, 0)
    else:
        assert cycles == 2 * 193 and snapshots > 2 and count(engine, models.Decision, run) > 0
    # The leaderboard of the run still shows each agent's final account value.
    board = {row.name: row.equity_usd for row in queries.agents(engine, run)}
    assert board == pytest.approx({a.name: a.final_equity for a in result.agents})
    assert [len(queries.closed_trades(engine, row.agent_id)) for row in queries.agents(engine, run)]
    with pytest.raises(ValueError, match="keep must be one of"):
        prune_run(engine, run, "nothing")
