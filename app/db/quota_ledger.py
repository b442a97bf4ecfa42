"""The `QuotaLedger` port in the `quota_usage` table: requests per provider, model and UTC day.

Each record is a short transaction of its own; the quota tracker runs it in a worker thread.
Database failures become `TemporaryError`: bookkeeping must never cost an agent its answer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db import models
from app.db.llm_store import (
    add_quota_usage,
    begin_request,
    exhausted_models,
    interrupt_pending_calls,
    quota_rows,
)
from app.domain import ExhaustedModel, ModelUsage, QuotaDelta
from app.errors import TemporaryError


class SqlQuotaLedger:
    """Quota usage rows in a migrated database.

    With `run_id`, each request is also recorded before it is sent (`begin`): counted, with a
    `pending` call row of the agent of that run.
    """

    def __init__(
        self, session_factory: sessionmaker[Session], *, run_id: str | None = None
    ) -> None:
        self.session_factory = session_factory
        self.run_id = run_id
        self._agent_ids: dict[str, int | None] = {}

    def begin(self, provider: str, model: str, *, agent: str, at: datetime) -> int | None:
        """Count a request about to be sent and write its pending call row; return its id."""
        if self.run_id is None:
            return None
        try:
            with self.session_factory.begin() as session:
                return begin_request(
                    session,
                    provider=provider,
                    model=model,
                    agent_id=self._agent_id(session, agent),
                    at=at,
                    pid=os.getpid(),
                )
        except SQLAlchemyError as error:
            raise TemporaryError(f"a request could not be recorded: {error}") from error

    def _agent_id(self, session: Session, agent: str) -> int | None:
        if agent not in self._agent_ids:
            self._agent_ids[agent] = session.scalar(
                select(models.Agent.id).where(
                    models.Agent.run_id == self.run_id, models.Agent.name == agent
                )
            )
        return self._agent_ids[agent]

    def interrupt_pending(self) -> int:
        """Mark the pending call rows of processes that are gone as interrupted; count them."""
        with self.session_factory.begin() as session:
            return interrupt_pending_calls(session, alive=_alive)

    def record(self, deltas: Sequence[QuotaDelta]) -> None:
        """Add `deltas` to their (provider, model, day) rows in one transaction."""
        try:
            with self.session_factory.begin() as session:
                for delta in deltas:
                    add_quota_usage(session, delta)
        except SQLAlchemyError as error:
            raise TemporaryError(f"quota usage could not be recorded: {error}") from error

    def exhausted_on(self, day: date) -> list[ExhaustedModel]:
        """Return the models marked exhausted (or not served) on `day`."""
        try:
            with self.session_factory() as session:
                return exhausted_models(session, day)
        except SQLAlchemyError as error:
            raise TemporaryError(f"quota usage could not be read: {error}") from error

    def usage_on(self, day: date) -> list[ModelUsage]:
        """Return every model's requests and last-seen limits on `day`."""
        try:
            with self.session_factory() as session:
                return [
                    ModelUsage(
                        provider=row.provider,
                        model=row.model,
                        day=row.day,
                        calls=row.calls,
                        successes=row.successes,
                        failures=row.failures,
                        rate_limited=row.rate_limited,
                        requests_limit=row.requests_limit,
                        requests_remaining=row.requests_remaining,
                        model_requests_limit=row.model_requests_limit,
                        model_requests_remaining=row.model_requests_remaining,
                        last_status=row.last_status,
                        last_error=row.last_error,
                        exhausted_at=row.exhausted_at,
                        updated_at=row.updated_at,
                    )
                    for row in quota_rows(session, day)
                ]
        except SQLAlchemyError as error:
            raise TemporaryError(f"quota usage could not be read: {error}") from error


def _alive(pid: int) -> bool:
    """Return True when process `pid` runs on this machine (its pending requests are live)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
