"""The `AnswerCache` port in the `llm_cache` table: stored answers and failure markers by key.

A hit is one primary-key lookup and no write: hits are counted in memory and added to the rows by
`flush_hits()` (`close()` calls it), so a backtest replays without an fsync per cycle. Writes run
in worker threads, each in a short transaction of its own, so a busy SQLite file never stalls the
event loop. How a row encodes an answer or a failure is in `app.db.llm_store`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db import models
from app.db.llm_store import add_cache_hits, cached_entry, save_cached_answer, save_failure_marker
from app.domain import ChatResult, RecordedFailure

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

_LOOKUP = select(
    models.LlmCache.response_text,
    models.LlmCache.response_z,
    models.LlmCache.provider,
    models.LlmCache.model,
    models.LlmCache.model_answered,
    models.LlmCache.reasoning_z,
    models.LlmCache.finish_reason,
    models.LlmCache.usage,
).where(models.LlmCache.key == bindparam("key"))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ResponseCache:
    """Stored answers in `llm_cache`, read with one lookup and written in short transactions."""

    def __init__(self, session_factory: sessionmaker[Session], *, clock: Clock = _utc_now) -> None:
        self.session_factory = session_factory
        self.clock = clock
        self._hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        bind = session_factory.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("the response cache needs a session factory bound to an engine")
        self._engine: Engine = bind

    def lookup(self, key: str) -> ChatResult | RecordedFailure | None:
        """Return the answer or failure marker stored under `key`, or None; count no hit.

        One primary-key read on a pooled connection, no ORM session: a replayed backtest does
        this for every agent-cycle. Reads in WAL mode never wait for writers.
        """
        started_s = time.perf_counter()
        with self._engine.connect() as connection:
            row = connection.execute(_LOOKUP, {"key": key}).first()
        if row is None:
            return None
        return cached_entry(row, latency_s=time.perf_counter() - started_s)

    def count_hit(self, key: str) -> None:
        """Count one use of the row under `key` (added to it by `flush_hits`)."""
        with self._lock:
            self._hits[key] += 1

    async def put(self, key: str, *, model: str, answer: ChatResult) -> None:
        """Store `answer` (asked of `model`) under `key`, in a worker thread."""
        try:
            await asyncio.to_thread(self.save, key, model=model, answer=answer)
        except SQLAlchemyError as error:
            # The answer is good even if it could not be kept for a later run.
            log.warning("could not store the answer in llm_cache: %s", error)

    def save(self, key: str, *, model: str, answer: ChatResult) -> None:
        """Store `answer` under `key` in a transaction of its own."""
        with self.session_factory.begin() as session:
            save_cached_answer(
                session, key=key, model=model, answer=answer, created_at=self.clock()
            )

    async def put_failure(self, key: str, failure: RecordedFailure, *, latency_s: float) -> None:
        """Store a failure marker under `key`, in a worker thread."""
        try:
            await asyncio.to_thread(self.save_failure, key, failure, latency_s=latency_s)
        except SQLAlchemyError as error:
            # Losing the marker only costs a replay its hold at this cycle (a miss instead).
            log.warning("could not store a failure marker in llm_cache: %s", error)

    def save_failure(self, key: str, failure: RecordedFailure, *, latency_s: float) -> None:
        """Store a failure marker under `key` in a transaction of its own."""
        with self.session_factory.begin() as session:
            save_failure_marker(
                session, key=key, failure=failure, latency_s=latency_s, created_at=self.clock()
            )

    def flush_hits(self) -> int:
        """Add the hits counted since the last flush to their rows; return how many."""
        with self._lock:
            hits, self._hits = dict(self._hits), Counter()
        if hits:
            with self.session_factory.begin() as session:
                add_cache_hits(session, hits)
        return sum(hits.values())

    def close(self) -> None:
        """Flush the hit counts."""
        self.flush_hits()
