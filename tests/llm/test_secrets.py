"""A canary API key never reaches the logs, the database or an error's text."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from app.config import AgentConfig, Settings
from app.db.base import Base
from app.db.session import Database, make_engine
from app.domain import ChatResult
from app.errors import AppError
from app.logs import configure_logging
from app.wiring import build_chat_model, build_llm_runtime
from tests.fakes.openai_server import FakeOpenAIServer, error
from tests.fakes.records import record_call
from tests.llm.conftest import MESSAGES, no_sleep

Server = Callable[..., FakeOpenAIServer]
# Shaped like no known key pattern, so only the explicit masking can hide it.
CANARY = "CANARY7f3a9c21e5d04b88"
AT = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def test_the_key_is_in_no_log_no_row_and_no_error_text(
    fake_server: Server,
    database: Database,
    db_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    server = fake_server("modelscope", api_key=CANARY)
    # Providers that echo what they were sent: the key comes back in error bodies.
    echo = {"errors": {"message": f"token {CANARY} exceeded its limit"}}
    server.script("Qwen/A", error(429, echo))
    gateway_page = error(502, f"<html>upstream refused {CANARY}</html>", content_type="text/html")
    server.script("Qwen/B", gateway_page, gateway_page)
    server.script("Qwen/C", error(401, {"errors": {"message": f"bad token {CANARY}"}}))
    log_file = tmp_path / "arena.log"
    configure_logging("DEBUG", secrets=[CANARY], file=str(log_file))
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        modelscope={"api_key": CANARY, "base_url": server.base_url},
        llm={"retry_backoff_s": 0, "max_retries": 1},
    )
    chains = [
        AgentConfig(
            name="quota", provider="modelscope", model="Qwen/A", fallback_models=["Qwen/D"]
        ),
        AgentConfig(name="gateway", provider="modelscope", model="Qwen/B"),
        AgentConfig(name="auth", provider="modelscope", model="Qwen/C"),
    ]

    async def run() -> list[ChatResult | BaseException]:
        runtime = build_llm_runtime(settings, database=database, mode="live")
        try:
            return await asyncio.gather(
                *(
                    build_chat_model(agent, settings, runtime, sleep=no_sleep).complete(MESSAGES)
                    for agent in chains
                ),
                return_exceptions=True,
            )
        finally:
            await runtime.aclose()

    ok, gateway, auth = asyncio.run(run())

    assert isinstance(ok, ChatResult) and ok.model == "Qwen/D"
    assert isinstance(gateway, AppError) and isinstance(auth, AppError)
    # Recorded through the repository, as the engine records every agent-cycle.
    record_call(database.engine, "quota", messages=MESSAGES, answer=ok, at=AT)
    for name, failure in (("gateway", gateway), ("auth", auth)):
        record_call(
            database.engine,
            name,
            messages=MESSAGES,
            answer=None,
            attempts=failure.attempts,
            error=str(failure),
            at=AT,
        )

    texts = [str(gateway), repr(gateway), str(auth), repr(auth)]
    texts += [a.error or "" for a in (*ok.attempts, *gateway.attempts, *auth.attempts)]
    assert all(CANARY not in text for text in texts)
    assert "***" in str(auth)  # the echoed key was there, and was masked
    dump = dump_rows(db_url)
    assert "Qwen/D" in dump and CANARY not in dump
    assert CANARY not in log_file.read_text(encoding="utf-8")
    assert CANARY not in capsys.readouterr().err
    assert CANARY not in caplog.text
    # The fake did receive it: the test would see a leak if one happened.
    assert server.requests[0].headers["authorization"] == f"Bearer {CANARY}"


def dump_rows(url: str) -> str:
    """Return every row of every table as text (on SQLite and PostgreSQL alike)."""
    engine = make_engine(url)
    with engine.connect() as connection:
        return "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in connection.execute(select(table))
        )
