"""The `QuotaLedger` port in the `quota_usage` table: requests per provider, model and UTC day.

Each record is a short transaction of its own; the quota tracker runs it in a worker thread.
Database failures become `TemporaryError`: bookkeeping must never cost an agent its answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db.llm_store import add_quota_usage, exhausted_models, quota_rows
from app.domain import ExhaustedModel, ModelUsage, QuotaDelta
from app.errors import TemporaryError


class SqlQuotaLedger:
    """Quota usage rows in a migrated database."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

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
