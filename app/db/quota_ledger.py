"""The `QuotaLedger` port in the `quota_usage` table: requests per provider, model and UTC day.

Each record is a short transaction of its own; the quota tracker runs it in a worker thread.
Database failures become `TemporaryError`: bookkeeping must never cost an agent its answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db.llm_store import add_quota_usage, exhausted_models
from app.domain import ExhaustedModel, QuotaDelta
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
