"""The `AnswerCache` port in the `llm_cache` table: stored answers and failure markers by key.

A hit is one primary-key lookup and no write: hits are counted in memory and added to the rows by
`flush_hits()` (`close()` calls it), so a backtest replays without an fsync per cycle. Lookups of
the thread that looks up first (the event loop's) go through one connection it keeps until
`close()`, in autocommit; other threads' go through the pool. Writes run in worker threads, each
in a short transaction of its own, so a busy SQLite file never stalls the event loop. How a row
encodes an answer or a failure is in `app.db.llm_store`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row, bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from app.db import models
from app.db.llm_store import (
    StoredRow,
    add_cache_hits,
    cached_entry,
    save_cached_answer,
    save_failure_marker,
)
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
# What `_HeldReader.row` returns when it cannot read (another thread, no reader, a driver error):
# the lookup then goes through the pool, as every lookup once did.
_UNREAD: Final = object()


class _HeldReader:
    """One pooled connection kept for a thread's lookups, read with the driver's own cursor.

    A replayed backtest looks up once per agent-cycle; a pool checkout and reset plus SQLAlchemy's
    statement handling cost several times the read itself (measured: 43 us against 6 us a
    lookup on a 50k-row cache). A pool hands out its connections in turn, each with a page
    cache of its own; one kept connection keeps its pages warm. The connection is
    in autocommit, so between lookups it holds no transaction: a SQLite reader sees every commit
    and never holds back a WAL checkpoint; a PostgreSQL one is never idle in a transaction.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect
        compiled = _LOOKUP.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        # SQLAlchemy's own conversions of each column (SQLite's JSON text to a dict), so a row
        # reads as it does through `Connection.execute`.
        self.processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in _LOOKUP.selected_columns
        )
        self.dbapi_error: type[Exception] = dialect.loaded_dbapi.Error
        self.thread_id: int | None = None
        self.connection: Connection | None = None
        self.lock = threading.Lock()

    def row(self, key: str) -> StoredRow | object | None:
        """Return the row under `key`, None when there is none, `_UNREAD` when not read here."""
        with self.lock:
            if self.thread_id is None:
                self.thread_id = threading.get_ident()
            elif self.thread_id != threading.get_ident():
                return _UNREAD
            try:
                if self.connection is None:
                    self.connection = self.engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT"
                    )
                dbapi_connection = self.connection.connection.dbapi_connection
                assert dbapi_connection is not None
                cursor = dbapi_connection.cursor()
                try:
                    parameters: Sequence[str] | Mapping[str, str] = (
                        (key,) if self.positional else {"key": key}
                    )
                    cursor.execute(self.sql, parameters)
                    # All rows (at most one): the statement ends, so no read stays open.
                    rows = cursor.fetchall()
                finally:
                    cursor.close()
            except (self.dbapi_error, SQLAlchemyError) as error:
                # A connection the server dropped, a locked file...: the pool's path reads
                # again on a fresh connection, and raises the error as every lookup did.
                log.debug("llm_cache lookup on the kept connection failed: %s", error)
                self._release(invalidate=True)
                return _UNREAD
        if not rows:
            return None
        return StoredRow(*self._converted(rows[0]))

    def _converted(self, values: Sequence[Any]) -> list[Any]:
        return [
            value if process is None else process(value)
            for value, process in zip(values, self.processors, strict=True)
        ]

    def close(self) -> None:
        """Give the connection back to the pool; a later lookup takes one again."""
        with self.lock:
            self._release(invalidate=False)

    def _release(self, *, invalidate: bool) -> None:
        connection, self.connection = self.connection, None
        if connection is None:
            return
        try:
            if invalidate:
                connection.invalidate()
            connection.close()
        except (self.dbapi_error, SQLAlchemyError) as error:
            log.debug("could not give back the kept llm_cache connection: %s", error)


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
        # Only a queue pool's connections may be kept and used from any thread (SQLite's
        # in-memory pools tie a connection to its thread).
        self._reader = _HeldReader(bind) if isinstance(bind.pool, QueuePool) else None

    def lookup(self, key: str) -> ChatResult | RecordedFailure | None:
        """Return the answer or failure marker stored under `key`, or None; count no hit.

        One primary-key read, no ORM session: a replayed backtest does this for every
        agent-cycle. Reads in WAL mode never wait for writers.
        """
        started_s = time.perf_counter()
        row = _UNREAD if self._reader is None else self._reader.row(key)
        if row is _UNREAD:
            with self._engine.connect() as connection:
                row = connection.execute(_LOOKUP, {"key": key}).first()
        if row is None:
            return None
        assert isinstance(row, StoredRow | Row)
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
        """Flush the hit counts and give back the connection kept for lookups."""
        if self._reader is not None:
            self._reader.close()
        self.flush_hits()
