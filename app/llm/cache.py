"""The response cache (`llm_cache`): answers keyed by a hash of what was asked.

Modes: `live` always calls and stores the answer, `cached` uses a stored answer when there is one
(and calls and stores otherwise), `replay` never calls (a miss is an error naming the prompt).
A call that got no answer leaves a failure marker (`RecordedFailure`, encoded as described in
`app.llm.store`): `replay` fails the same way, `cached` asks again and replaces it with the answer.
A hit is one primary-key lookup and no write: hits are counted in memory and added to the rows by
`flush_hits()` (the runtime calls it when it closes), so a backtest replays without an fsync per
cycle.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
import time
from collections import Counter
from typing import Any

from sqlalchemy import Engine, bindparam, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from app.db import models
from app.db.llm_rows import pairs_hash
from app.llm.openai_compat import PreparedRequest
from app.llm.quota import Clock, utc_now
from app.llm.store import RecordedFailure, add_cache_hits, cached_entry, save_failure_marker
from app.llm.store import save_cached_answer as _save
from app.ports import ChatResult

log = logging.getLogger(__name__)

_LOOKUP = select(
    models.LlmCache.response_text,
    models.LlmCache.provider,
    models.LlmCache.model,
    models.LlmCache.model_answered,
    models.LlmCache.reasoning_z,
    models.LlmCache.finish_reason,
    models.LlmCache.usage,
).where(models.LlmCache.key == bindparam("key"))


def cache_key(provider: str, request: PreparedRequest) -> str:
    """Return the sha256 of the canonical JSON of (provider, model, prompt hash, parameters).

    The prompt enters by its `prompt_hash` (of the messages exactly as sent), which the call's
    record stores too: the long prompt is serialised once, not once per model and record.
    """
    if any(set(message) != {"role", "content"} for message in request.messages):
        raise ValueError("a cached request's messages have exactly a role and a content")
    pairs = tuple((message["role"], message["content"]) for message in request.messages)
    payload: dict[str, Any] = {
        "provider": provider,
        "model": request.model,
        "prompt_hash": pairs_hash(pairs),
        "parameters": request.answer_parameters(),
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """Stored answers in `llm_cache`, read with one lookup and written in short transactions."""

    def __init__(self, session_factory: sessionmaker[Session], *, clock: Clock = utc_now) -> None:
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

    def get(self, key: str) -> ChatResult | None:
        """Return the stored answer under `key` as a cache hit (counted), or None.

        A failure marker is not an answer: it reads as None here.
        """
        found = self.lookup(key)
        if not isinstance(found, ChatResult):
            return None
        self.count_hit(key)
        return found

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
            _save(session, key=key, model=model, answer=answer, created_at=self.clock())

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
