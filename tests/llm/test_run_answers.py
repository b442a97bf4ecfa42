"""`RunAnswers`: one recorded run's answers and failures, read back from its `llm_call` rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.db import models
from app.db.llm_rows import llm_call_values
from app.db.run_answers import RunAnswers
from app.db.session import Database
from app.domain import (
    HELD_QUOTA,
    CallAttempt,
    ChatMessage,
    ChatResult,
    RecordedFailure,
    TokenUsage,
    prompt_hash,
)
from app.errors import ConfigError

AT = datetime(2025, 10, 20, tzinfo=UTC)
MODEL = "Qwen/Qwen3-235B-A22B-Instruct-2507"


def _prompt(text: str) -> tuple[ChatMessage, ...]:
    return (ChatMessage(role="system", content="trade"), ChatMessage(role="user", content=text))


def _record(
    database: Database,
    run_id: str,
    agent: str,
    calls: list[tuple[tuple[ChatMessage, ...], ChatResult | None, tuple[CallAttempt, ...]]],
) -> None:
    """Write `agent`'s calls in `run_id`, one cycle each, as the engine's recorder does."""
    with database.sessions.begin() as session:
        row = models.Agent(
            run_id=run_id,
            name=agent,
            provider="modelscope",
            model=MODEL,
            fallback_models=[],
            starting_cash_usd=10_000.0,
            created_at=AT,
        )
        session.add(row)
        session.flush()
        for number, (messages, answer, attempts) in enumerate(calls):
            at = AT + timedelta(minutes=5 * number)
            cycle = models.Cycle(
                agent_id=row.id, scheduled_at=at, started_at=at, status="ok", invocation=number
            )
            session.add(cycle)
            session.flush()
            for values in llm_call_values(
                messages=messages,
                answer=answer,
                attempts=attempts,
                created_at=at,
                agent_id=row.id,
                cycle_id=cycle.id,
                error=None if answer else "no answer",
            ):
                session.add(models.LlmCall(**values))


def _failed(outcome: str, error: str) -> CallAttempt:
    return CallAttempt(provider="modelscope", model=MODEL, outcome=outcome, error=error)


def test_answers_come_back_whole_and_failures_by_kind(database: Database) -> None:
    answered = ChatResult(
        text='{"BTC": {"coin": "BTC", "signal": "hold"}}',
        provider="modelscope",
        model=MODEL,
        reasoning="the trend is flat " * 200,
        finish_reason="stop",
        usage=TokenUsage(prompt_tokens=900, completion_tokens=40, total_tokens=940),
    )
    after_retry = (_failed("server_error", "503 Server Overloaded"),)
    _record(
        database,
        "run-a",
        "trend",
        [
            (_prompt("cycle 0"), answered, ()),
            (_prompt("cycle 1"), None, (_failed("timeout", "did not answer within 1 s"),)),
            (
                _prompt("cycle 2"),
                None,
                (_failed("server_error", "503"), _failed("rate_limited", "429")),
            ),
            (_prompt("cycle 3"), None, (_failed(HELD_QUOTA, "every model is skipped"),)),
            (_prompt("cycle 4"), replace_attempts(answered, after_retry), after_retry),
        ],
    )
    # Another run asked the same prompts and got other answers: they are not this run's.
    _record(database, "run-b", "trend", [(_prompt("cycle 1"), answered, ())])

    recorded = RunAnswers(database.engine, "run-a")
    assert recorded.agents() == frozenset({"trend"})
    first = recorded.lookup("trend", prompt_hash(_prompt("cycle 0")))
    assert isinstance(first, ChatResult) and first.cache_hit
    assert (first.text, first.reasoning, first.model, first.usage.total_tokens) == (
        answered.text,
        answered.reasoning,
        MODEL,
        940,
    )
    timeout = recorded.lookup("trend", prompt_hash(_prompt("cycle 1")))
    assert timeout == RecordedFailure("timeout", "did not answer within 1 s", "modelscope", MODEL)
    skipped = recorded.lookup("trend", prompt_hash(_prompt("cycle 2")))
    held = recorded.lookup("trend", prompt_hash(_prompt("cycle 3")))
    assert isinstance(skipped, RecordedFailure) and isinstance(held, RecordedFailure)
    assert (skipped.kind, held.kind) == ("no_model", "no_model")
    # An answer after a failed request is the call's answer.
    assert isinstance(recorded.lookup("trend", prompt_hash(_prompt("cycle 4"))), ChatResult)
    assert recorded.lookup("trend", prompt_hash(_prompt("never asked"))) is None
    assert recorded.lookup("contra", prompt_hash(_prompt("cycle 0"))) is None


def replace_attempts(answer: ChatResult, failed: tuple[CallAttempt, ...]) -> ChatResult:
    """`answer` as given after the `failed` requests (then the one that answered)."""
    ok = CallAttempt(provider="modelscope", model=MODEL, outcome="ok")
    return ChatResult(
        text=answer.text, provider=answer.provider, model=answer.model, attempts=(*failed, ok)
    )


def test_a_prompt_asked_twice_gives_the_calls_in_order_then_the_last(database: Database) -> None:
    same = _prompt("the same prompt twice")
    answered = ChatResult(text="{}", provider="modelscope", model=MODEL)
    _record(
        database,
        "run-a",
        "trend",
        [(same, None, (_failed("timeout", "slow"),)), (same, answered, ())],
    )
    recorded = RunAnswers(database.engine, "run-a")
    found = [recorded.lookup("trend", prompt_hash(same)) for _ in range(3)]
    assert isinstance(found[0], RecordedFailure)
    assert isinstance(found[1], ChatResult) and isinstance(found[2], ChatResult)


def test_an_unknown_run_is_refused(database: Database) -> None:
    with pytest.raises(ConfigError, match="--replay-run nope: no run with that id"):
        RunAnswers(database.engine, "nope")
