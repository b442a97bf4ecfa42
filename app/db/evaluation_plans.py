"""The plans of `arena evaluate` in the database: which windows finished, with their results.

A plan is found by its key (a hash of what it runs), so the same command run again resumes: the
driver records each window as soon as it finishes, and a new run skips the recorded ones. The
results are stored as the JSON the workers hand back, so this module knows nothing of their shape.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.db import models

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class EvaluationPlanStore:
    """Plans and their finished windows in the `evaluation_plan` and `evaluation_window` tables."""

    def __init__(self, sessions: sessionmaker[Session], *, clock: Clock = _utc_now) -> None:
        self._sessions = sessions
        self._clock = clock

    def open_plan(self, key: str, spec: Mapping[str, Any], *, window_count: int) -> int:
        """Return the id of the plan called `key`, recording it first when it is new."""
        with self._sessions() as session:
            found = session.scalar(
                select(models.EvaluationPlan.id).where(models.EvaluationPlan.key == key)
            )
            if found is not None:
                return int(found)
            plan = models.EvaluationPlan(
                key=key, spec=dict(spec), window_count=window_count, created_at=self._clock()
            )
            session.add(plan)
            try:
                session.commit()
            except IntegrityError:  # another driver recorded it between the two statements
                session.rollback()
                return self.open_plan(key, spec, window_count=window_count)
            return int(plan.id)

    def finished(self, plan_id: int) -> dict[int, dict[str, Any]]:
        """Return the results of the plan's finished windows by window number."""
        with self._sessions() as session:
            rows = session.execute(
                select(models.EvaluationWindow.window_index, models.EvaluationWindow.result)
                .where(models.EvaluationWindow.plan_id == plan_id)
                .order_by(models.EvaluationWindow.window_index)
            ).all()
        return {int(index): dict(result) for index, result in rows}

    def record(
        self,
        plan_id: int,
        *,
        window_index: int,
        window_key: str,
        result: Mapping[str, Any],
        run_id: str | None,
    ) -> None:
        """Record a finished window (a window recorded before keeps its first result)."""
        with self._sessions() as session:
            session.add(
                models.EvaluationWindow(
                    plan_id=plan_id,
                    window_index=window_index,
                    window_key=window_key,
                    run_id=run_id,
                    result=dict(result),
                    finished_at=self._clock(),
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()
