"""Prompts stored against an earlier text of their kind come back exactly, from any database."""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from app.db import llm_rows, models
from app.db.llm_rows import KEYFRAMES, encode_messages, text_hash
from app.db.migrate import upgrade
from app.db.queries import call_messages
from app.db.repository import AgentIdentity, SqlCycleStore
from app.db.session import make_engine
from app.db.text_delta import (
    KeyframeBook,
    compress_against,
    delta_base,
    expand_text,
    is_delta,
)
from app.domain import AccountState, AccountView, ChatMessage, ChatResult
from app.ports import AgentCycleRecord, StrategyAnswer

AT = datetime(2026, 2, 18, 0, 0, tzinfo=UTC)
CASH_USD = 10_000.0
HASH = "a" * 64


@pytest.fixture(autouse=True)
def fresh_keyframes() -> Iterator[None]:
    KEYFRAMES.clear()
    llm_rows._PART_MEMO.clear()
    yield
    KEYFRAMES.clear()
    llm_rows._PART_MEMO.clear()


def engine_at(url: str) -> Engine:
    engine = make_engine(url)
    upgrade(url, engine=engine)
    return engine


def market_section(cycle: int) -> str:
    """A market section like the prompt's: a template, and series sliding by one each cycle."""
    rng = random.Random(7)
    closes = [round(66_000 + rng.gauss(0, 50), 1) for _ in range(cycle + 10)]
    blocks = []
    for coin in ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE"):
        window = closes[cycle : cycle + 10]
        blocks.append(
            f"### ALL {coin} DATA\n\ncurrent_price = {window[-1]}, current_rsi (7 period) = "
            f"{50 + cycle % 7}\n\nIntraday series (5-minute candles, oldest → latest):\n\n"
            f"{coin} close prices: {window}\n\nEMA indicators (20-period): "
            f"{[round(v * 0.999, 2) for v in window]}\n\n"
        )
    return "**ALL OF THE PRICE OR SIGNAL DATA BELOW IS ORDERED: OLDEST → NEWEST**\n\n" + (
        "---\n\n".join(blocks)
    )


SYSTEM = "You trade crypto perpetuals. " * 40


def messages_for(cycle: int) -> tuple[ChatMessage, ...]:
    account = (
        f"\n\n### HERE IS YOUR ACCOUNT INFORMATION\n\nAvailable Cash: {9_000 + cycle}\n"
        + '{"coin": "BTC", "side": "long", "quantity": 0.02, "entry_price": 66493.35}\n' * 8
    )
    user = f"It has been {cycle * 3} minutes since you started trading.\n\n"
    return (
        ChatMessage("system", SYSTEM),
        ChatMessage("user", user + market_section(cycle) + account),
    )


def record_cycle(store: SqlCycleStore, cycle: int) -> None:
    at = AT + timedelta(minutes=3 * cycle)
    messages = messages_for(cycle)
    view = AccountView(
        at=at,
        starting_cash_usd=CASH_USD,
        cash_usd=CASH_USD,
        margin_usd=0.0,
        unrealized_pnl_usd=0.0,
        realized_pnl_usd=0.0,
        fees_paid_usd=0.0,
        funding_paid_usd=0.0,
        positions={},
    )
    answer = ChatResult(text="{}", provider="modelscope", model="Qwen/A", latency_s=0.1)
    record = AgentCycleRecord(
        agent="a",
        scheduled_at=at,
        started_at=at,
        finished_at=at,
        invocation=cycle + 1,
        status="ok",
        books=AccountState(starting_cash_usd=CASH_USD, cash_usd=CASH_USD),
        view=view,
        prompt_version="v1",
        messages=messages,
        answer=StrategyAnswer(decisions=(), chat=answer),
        shared_texts=(SYSTEM, market_section(cycle)),
    )
    assert store.record_cycle(record)


def new_store(engine: Engine) -> SqlCycleStore:
    store = SqlCycleStore(engine, run_id="test")
    store.register_agents(
        [AgentIdentity("a", "modelscope", "Qwen/A", starting_cash_usd=CASH_USD)], at=AT
    )
    return store


def call_ids(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.scalars(select(models.LlmCall.id).order_by(models.LlmCall.id)))


def test_a_delta_blob_names_its_base_and_reads_back_exactly() -> None:
    base = market_section(0)
    text = market_section(1)
    blob = compress_against(text, HASH, base)

    assert is_delta(blob) and delta_base(blob) == HASH
    assert not is_delta(zlib.compress(text.encode()))
    assert expand_text(blob, {HASH: base}.__getitem__) == text
    assert expand_text(zlib.compress(text.encode()), {}.__getitem__) == text
    assert len(blob) < len(zlib.compress(text.encode(), 9)) / 2


def test_the_book_makes_a_keyframe_first_every_nth_time_and_for_short_texts() -> None:
    book = KeyframeBook(every=3)
    found = [book.encode("market", market_section(i), f"{i:064d}") for i in range(8)]

    assert [base is not None for _blob, base in found] == [
        False,
        True,
        True,
        True,
        False,
        True,
        True,
        True,
    ]
    assert {base.key for _blob, base in found[1:4] if base} == {f"{0:064d}"}
    assert book.encode("short", "tiny text", HASH) == (zlib.compress(b"tiny text", 6), None)


def test_a_chained_book_compresses_each_text_against_the_previous_one() -> None:
    book = KeyframeBook(every=3)
    found = [book.encode("m", market_section(i), f"{i:064d}", chain=True) for i in range(5)]

    assert [base.key if base else None for _blob, base in found] == [
        None,
        f"{0:064d}",
        f"{1:064d}",
        f"{2:064d}",
        None,
    ]


def test_prompts_stored_as_deltas_read_back_exactly_and_smaller(db_url: str) -> None:
    engine = engine_at(db_url)
    store = new_store(engine)
    for cycle in range(40):
        record_cycle(store, cycle)

    assert [call_messages(engine, i) for i in call_ids(engine)] == [
        list(messages_for(cycle)) for cycle in range(40)
    ]
    with engine.connect() as connection:
        calls = list(connection.scalars(select(models.LlmCall.messages_z)))
        parts = list(connection.scalars(select(models.PromptPart.text_z)))
        stored = connection.scalar(select(func.sum(func.length(models.PromptPart.text_z))))
    assert sum(is_delta(blob) for blob in calls) >= 35
    assert sum(is_delta(blob) for blob in parts) >= 30
    plain = sum(len(zlib.compress(market_section(c).encode(), 6)) for c in range(40))
    assert stored < plain * 0.7


def test_a_second_database_gets_every_base_its_deltas_name(tmp_path: Path) -> None:
    """The keyframes live in the process: a database opened later still reads back whole."""
    first = engine_at(f"sqlite:///{tmp_path}/first.db")
    second = engine_at(f"sqlite:///{tmp_path}/second.db")
    store_first, store_second = new_store(first), new_store(second)
    for cycle in range(6):
        record_cycle(store_first, cycle)
    record_cycle(store_second, 6)

    (only,) = call_ids(second)
    assert call_messages(second, only) == list(messages_for(6))


def test_a_text_met_again_after_being_forgotten_is_stored_alone_never_in_a_loop() -> None:
    """Section 1 follows section 0; once the process forgets section 0 and meets it again, a
    delta against section 1 would make a loop of two rows that never reads back."""
    first, second = market_section(0), market_section(1)
    encode_messages([ChatMessage("user", first)], shared=[first])
    _, parts = encode_messages([ChatMessage("user", second)], shared=[second])
    assert is_delta(parts[text_hash(second)].stored_blob())

    llm_rows._PART_MEMO.pop(text_hash(first))
    _, parts = encode_messages([ChatMessage("user", first)], shared=[first])
    assert not is_delta(parts[text_hash(first)].stored_blob())
