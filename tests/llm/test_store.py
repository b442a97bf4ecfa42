"""Persistence of calls, quota and usage: rows as the engine and `arena quota` read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import models
from app.db.llm_rows import decompress_text
from app.db.llm_store import add_quota_usage, quota_rows, usage_by_agent
from app.domain import CallAttempt, ChatResult, QuotaDelta, TokenUsage, prompt_hash
from tests.fakes.records import record_call
from tests.llm.conftest import MESSAGES

AT = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def answer(model: str, *, latency_s: float, tokens: tuple[int, int, int]) -> ChatResult:
    usage = TokenUsage(
        prompt_tokens=tokens[0],
        completion_tokens=tokens[1],
        reasoning_tokens=tokens[2],
        total_tokens=tokens[0] + tokens[1],
    )
    return ChatResult(
        text='{"BTC": {"signal": "hold"}}',
        provider="modelscope",
        model=model,
        reasoning="flat market",
        finish_reason="stop",
        usage=usage,
        latency_s=latency_s,
        attempts=(
            CallAttempt("modelscope", "Qwen/A", "rate_limited", "429", 0.05, 429),
            CallAttempt("modelscope", model, "ok", None, latency_s, 200, usage=usage),
        ),
    )


def test_a_call_is_recorded_per_request_with_its_compressed_prompt(
    session_factory: sessionmaker[Session],
) -> None:
    """A 50 ms 429 on Qwen/A, then Qwen/B answers in 1.25 s: two rows, the prompt on the answer."""
    engine = session_factory.kw["bind"]
    record_call(
        engine,
        "qwen",
        messages=MESSAGES,
        answer=answer("Qwen/B", latency_s=1.25, tokens=(100, 40, 10)),
        at=AT,
    )
    with session_factory() as session:
        failed, used = session.scalars(select(models.LlmCall).order_by(models.LlmCall.id))

    assert (failed.model_requested, failed.model, failed.outcome) == (
        "Qwen/A",
        None,
        "rate_limited",
    )
    assert failed.messages_z is None and failed.latency_ms == 50
    assert (used.model_requested, used.model, used.outcome) == ("Qwen/A", "Qwen/B", "ok")
    assert used.prompt_hash == prompt_hash(MESSAGES)
    assert used.cycle_id is not None and used.cycle_id == failed.cycle_id
    assert MESSAGES[1].content in decompress_text(used.messages_z)
    assert decompress_text(used.reasoning_z) == "flat market"
    assert (used.latency_ms, used.prompt_tokens, used.attempt) == (1250, 100, 2)


def test_usage_by_agent_sums_tokens_latency_and_calls(
    session_factory: sessionmaker[Session],
) -> None:
    """Agent one: answers of 1.0 s and 0.5 s after a 50 ms 429 each; agent two: one cache hit.

    Requests of agent one: 4 (2 failed), latency 50 + 1000 + 50 + 500 = 1600 ms;
    tokens 100 + 200 prompt, 40 + 60 completion.
    """
    engine = session_factory.kw["bind"]
    for minutes, latency_s, tokens in ((0, 1.0, (100, 40, 0)), (3, 0.5, (200, 60, 5))):
        record_call(
            engine,
            "one",
            messages=MESSAGES,
            answer=answer("Qwen/B", latency_s=latency_s, tokens=tokens),
            at=AT + timedelta(minutes=minutes),
        )
    hit = ChatResult(text="{}", provider="modelscope", model="Qwen/A", cache_hit=True)
    record_call(engine, "two", messages=MESSAGES, answer=hit, at=AT)
    with session_factory() as session:
        rows = session.execute(select(models.Agent.name, models.Agent.id))
        ids = {name: agent_id for name, agent_id in rows}
        one, two = ids["one"], ids["two"]
        usage = usage_by_agent(session)
        later = usage_by_agent(session, since=AT + timedelta(minutes=4))

    assert (usage[one].calls, usage[one].requests, usage[one].failures) == (4, 4, 2)
    assert (usage[one].prompt_tokens, usage[one].completion_tokens) == (300, 100)
    assert (usage[one].reasoning_tokens, usage[one].latency_ms) == (5, 1600)
    assert usage[one].mean_latency_ms == 400
    assert (usage[two].calls, usage[two].requests, usage[two].cache_hits) == (1, 0, 1)
    assert later == {}


def test_quota_usage_accumulates_per_day_and_keeps_the_last_seen_limits(
    session_factory: sessionmaker[Session],
) -> None:
    headers = {
        "modelscope-ratelimit-requests-limit": "2000",
        "modelscope-ratelimit-requests-remaining": "1895",
        "modelscope-ratelimit-model-requests-limit": "500",
        "modelscope-ratelimit-model-requests-remaining": "477",
    }
    day = AT.date()
    with session_factory.begin() as session:
        add_quota_usage(
            session,
            QuotaDelta("modelscope", "Qwen/A", day, AT, calls=1, successes=1, headers=headers),
        )
        # A 401 carries no headers: the limits seen before stay.
        add_quota_usage(
            session,
            QuotaDelta(
                "modelscope",
                "Qwen/A",
                day,
                AT + timedelta(minutes=3),
                calls=2,
                failures=2,
                rate_limited=1,
                last_status="401 auth_error",
                last_error="refused",
            ),
        )
        add_quota_usage(
            session, QuotaDelta("modelscope", "Qwen/A", day + timedelta(days=1), AT, calls=1)
        )

    with session_factory() as session:
        (row,) = quota_rows(session, day)

    assert (row.calls, row.successes, row.failures, row.rate_limited) == (3, 1, 2, 1)
    assert (row.requests_remaining, row.model_requests_remaining) == (1895, 477)
    assert (row.requests_limit, row.model_requests_limit) == (2000, 500)
    assert (row.last_status, row.last_error) == ("401 auth_error", "refused")
    assert row.updated_at == AT + timedelta(minutes=3)


def test_a_huge_answer_is_stored_capped_and_the_cache_keeps_it_compressed(
    session_factory: sessionmaker[Session],
) -> None:
    """A 5,000,000-character answer: 262,144 characters (256 Ki) are kept, with a note.

    The parser refuses answers over the same 262,144 characters, so the stored one (cut, plus
    the note) is refused the same way in a replay. The cache keeps it zlib-compressed and no
    plain copy (before the fix both rows held all 5,000,000 characters, uncompressed).
    """
    from app.db.answer_cache import ResponseCache
    from app.db.llm_rows import MAX_STORED_ANSWER_CHARS
    from app.decisions import MAX_ANSWER_CHARS, parse_decisions_report
    from app.errors import DecisionError

    start = '{"BTC": {"coin": "BTC", "signal": "hold", "justification": "'
    huge = start + "x" * (5_000_000 - len(start))  # 5,000,000 - 262,144 = 4,737,856 left out
    result = ChatResult(
        text=huge,
        provider="modelscope",
        model="Qwen/A",
        reasoning="r" * 300_000,
        finish_reason="stop",
        attempts=(CallAttempt("modelscope", "Qwen/A", "ok", None, 1.0, 200),),
    )
    engine = session_factory.kw["bind"]
    record_call(engine, "qwen", messages=MESSAGES, answer=result, at=AT)
    cache = ResponseCache(session_factory, clock=lambda: AT)
    cache.save("k1", model="Qwen/A", answer=result)

    with session_factory() as session:
        call = session.scalars(select(models.LlmCall)).one()
        row = session.get(models.LlmCache, "k1")
    assert row is not None and call.response_text is not None
    assert MAX_STORED_ANSWER_CHARS == MAX_ANSWER_CHARS == 262_144
    assert call.response_text.startswith(huge[:MAX_STORED_ANSWER_CHARS])
    assert call.response_text.endswith("4,737,856 more characters of 5,000,000 not kept]")
    assert len(call.response_text) < 263_000
    assert len(decompress_text(call.reasoning_z)) < 264_000  # 300,000 cut to 262,144 + note
    assert row.response_text == "" and row.response_z is not None
    assert len(row.response_z) < 10_000, "kept compressed"
    stored = cache.lookup("k1")
    assert isinstance(stored, ChatResult) and stored.text == call.response_text
    for text in (huge, stored.text):
        try:
            parse_decisions_report(text, ("BTC",))
        except DecisionError as error:
            assert "more than the 262,144" in str(error)
        else:  # pragma: no cover - the assertion below names the failure
            raise AssertionError("an answer over the limit must be refused")


def test_a_call_that_reached_no_model_names_the_agents_model_and_is_no_request(
    session_factory: sessionmaker[Session],
) -> None:
    """Cut before its first request: one `error` row for the agent's model (not "unknown"),
    counted neither as a request nor as held (before the fix: provider and model "unknown",
    and one request counted)."""
    engine = session_factory.kw["bind"]
    record_call(engine, "qwen", messages=MESSAGES, answer=None, error="cut before asking", at=AT)

    with session_factory() as session:
        row = session.scalars(select(models.LlmCall)).one()
        usage = usage_by_agent(session)[row.agent_id or 0]
    assert (row.provider, row.model_requested, row.outcome) == ("modelscope", "Qwen/A", "error")
    assert (usage.calls, usage.requests, usage.held_quota) == (1, 0, 0)
