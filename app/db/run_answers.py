"""The `RecordedAnswers` port over one run's `llm_call` rows: what that run got, prompt by prompt.

`arena backtest --llm-mode replay --replay-run RUN_ID` takes each agent's answers from here
instead of the answer cache, so the replay is that run's, whatever other runs stored since: where
the run got an answer, the same text (and reasoning); where its call failed, the same failure.

Opening reads a small index (agent, prompt hash, cycle, row id, outcome) of the run's calls in
one query; each lookup then reads one row by its primary key, so a long run's answer texts are
never all held in memory.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import Engine, Row, bindparam, select

from app.db import models
from app.db.llm_rows import decompress_text
from app.domain import (
    ChatResult,
    RecordedFailure,
    TokenUsage,
    recorded_failure_kind,
)
from app.errors import ConfigError

# The outcomes of a row that carries the call's answer (a parse error is an answer too: the
# replay parses the same text and fails the same way).
ANSWER_OUTCOMES: Final = frozenset({"ok", "cache_hit", "parse_error"})

_ROW = select(
    models.LlmCall.provider,
    models.LlmCall.model_requested,
    models.LlmCall.model,
    models.LlmCall.response_text,
    models.LlmCall.reasoning_z,
    models.LlmCall.finish_reason,
    models.LlmCall.prompt_tokens,
    models.LlmCall.completion_tokens,
    models.LlmCall.reasoning_tokens,
    models.LlmCall.total_tokens,
    models.LlmCall.outcome,
    models.LlmCall.error,
).where(models.LlmCall.id == bindparam("row_id"))


@dataclass(frozen=True, slots=True)
class _Call:
    """One recorded call: the row of its answer, or of its last failed request."""

    row_id: int
    answered: bool


class RunAnswers:
    """One run's answers and failures from its `llm_call` rows (see the module)."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.run_id = run_id
        self._engine = engine
        self._lock = threading.Lock()
        self._used: dict[tuple[str, str], int] = defaultdict(int)
        with engine.connect() as connection:
            names = connection.execute(
                select(models.Agent.name).where(models.Agent.run_id == run_id)
            ).scalars()
            self._agents = frozenset(names)
            if not self._agents:
                raise ConfigError(
                    f"--replay-run {run_id}: no run with that id in the database "
                    "(arena leaderboard --run ID shows a recorded run)"
                )
            rows = connection.execute(
                select(
                    models.Agent.name,
                    models.LlmCall.prompt_hash,
                    models.LlmCall.cycle_id,
                    models.LlmCall.id,
                    models.LlmCall.model,
                    models.LlmCall.outcome,
                )
                .join(models.Agent, models.Agent.id == models.LlmCall.agent_id)
                .where(models.Agent.run_id == run_id, models.LlmCall.prompt_hash.is_not(None))
                .order_by(models.LlmCall.id)
            ).all()
        self._calls = _index(rows)

    def agents(self) -> frozenset[str]:
        """Return the names of the run's agents."""
        return self._agents

    def lookup(self, agent: str, prompt_hash: str) -> ChatResult | RecordedFailure | None:
        """Return the run's answer or failure for `agent`'s prompt, or None (see the port)."""
        key = (agent, prompt_hash)
        calls = self._calls.get(key)
        if not calls:
            return None
        with self._lock:
            index = min(self._used[key], len(calls) - 1)
            self._used[key] += 1
        call = calls[index]
        started_s = time.perf_counter()
        with self._engine.connect() as connection:
            row = connection.execute(_ROW, {"row_id": call.row_id}).one()
        if not call.answered:
            return RecordedFailure(
                kind=recorded_failure_kind(row.outcome),
                message=row.error or f"the call ended {row.outcome}",
                provider=row.provider,
                model=row.model_requested,
            )
        return ChatResult(
            text=row.response_text or "",
            provider=row.provider,
            model=row.model,
            reasoning=decompress_text(row.reasoning_z),
            finish_reason=row.finish_reason,
            usage=TokenUsage(
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
                reasoning_tokens=row.reasoning_tokens,
                total_tokens=row.total_tokens,
            ),
            latency_s=time.perf_counter() - started_s,
            cache_hit=True,
        )


def _index(
    rows: Sequence[Row[str, str | None, int | None, int, str | None, str]],
) -> dict[tuple[str, str], list[_Call]]:
    """Group the rows into calls (one per agent-cycle), in the order they were made.

    A call's rows share its cycle; its answer's row has a `model`, and without one the call
    failed and its last row says how.
    """
    calls: dict[tuple[str, str], dict[int | None, _Call]] = defaultdict(dict)
    for name, prompt, cycle_id, row_id, model, outcome in rows:
        if prompt is None:
            continue
        known = calls[(name, prompt)]
        if model is not None and outcome in ANSWER_OUTCOMES:
            known[cycle_id] = _Call(row_id, answered=True)
        elif not (cycle_id in known and known[cycle_id].answered):
            known[cycle_id] = _Call(row_id, answered=False)
    return {key: list(by_cycle.values()) for key, by_cycle in calls.items()}
