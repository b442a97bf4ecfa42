"""Thin a finished backtest run down to what an evaluation keeps (`arena evaluate --keep`).

- `full`: everything the backtest recorded.
- `trades`: the cycles, decisions, fills and account snapshots, without the model calls (the
  prompts and answers, which the answer cache holds once for every run that asked them).
- `summary`: the agents, their fills, positions and funding (the trades), and each agent's last
  account snapshot (what `arena leaderboard --run` shows); no cycles, decisions or calls.

Deleting after the run keeps the backtest's code one path for every `--keep`; SQLite reuses the
freed pages for the next window, so the file stops growing by the pruned records.
"""

from __future__ import annotations

from typing import Final, Literal

from sqlalchemy import Engine, delete, func, select

from app.db import models

Keep = Literal["summary", "trades", "full"]
KEEPS: Final = ("summary", "trades", "full")


def prune_run(engine: Engine, run_id: str, keep: str) -> None:
    """Delete what `keep` leaves out of the run `run_id`'s records."""
    if keep not in KEEPS:
        raise ValueError(f"keep must be one of {', '.join(KEEPS)}, got {keep!r}")
    if keep == "full":
        return
    agent_ids = select(models.Agent.id).where(models.Agent.run_id == run_id).scalar_subquery()
    with engine.begin() as connection:
        connection.execute(delete(models.LlmCall).where(models.LlmCall.agent_id.in_(agent_ids)))
        if keep == "trades":
            return
        last = (
            select(func.max(models.AccountSnapshot.id))
            .where(models.AccountSnapshot.agent_id.in_(agent_ids))
            .group_by(models.AccountSnapshot.agent_id)
        )
        connection.execute(
            delete(models.AccountSnapshot).where(
                models.AccountSnapshot.agent_id.in_(agent_ids),
                models.AccountSnapshot.id.not_in(last),
            )
        )
        # Decisions go with their cycles (ON DELETE CASCADE); fills keep their rows.
        cycle_ids = select(models.Cycle.id).where(models.Cycle.agent_id.in_(agent_ids))
        connection.execute(delete(models.Decision).where(models.Decision.cycle_id.in_(cycle_ids)))
        connection.execute(
            models.Fill.__table__.update()  # type: ignore[attr-defined]
            .where(models.Fill.cycle_id.in_(cycle_ids))
            .values(cycle_id=None)
        )
        connection.execute(
            models.AccountSnapshot.__table__.update()  # type: ignore[attr-defined]
            .where(models.AccountSnapshot.cycle_id.in_(cycle_ids))
            .values(cycle_id=None)
        )
        connection.execute(delete(models.Cycle).where(models.Cycle.agent_id.in_(agent_ids)))
