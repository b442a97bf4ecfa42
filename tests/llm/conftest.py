"""Fixtures for the LLM adapter tests: fake servers on loopback and a migrated database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.db.migrate import upgrade
from app.db.session import Database, make_engine, make_session_factory
from app.domain import ChatMessage
from tests.fakes.openai_server import FakeOpenAIServer

MESSAGES = (
    ChatMessage("system", "You trade crypto perpetuals. Answer with one JSON object."),
    ChatMessage("user", "BTC is at 100000. Decide as json."),
)


@pytest.fixture
def fake_server() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """Return a factory of started fake servers, all stopped after the test."""
    started: list[FakeOpenAIServer] = []

    def start(flavor: str = "modelscope", **kwargs: Any) -> FakeOpenAIServer:
        server = FakeOpenAIServer(flavor, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def database(db_url: str) -> Database:
    """Return a freshly migrated SQLite file."""
    engine = make_engine(db_url)
    upgrade(db_url, engine=engine)
    return Database(url=db_url, engine=engine, sessions=make_session_factory(engine))


@pytest.fixture
def session_factory(database: Database) -> sessionmaker[Session]:
    """Return a session factory on a freshly migrated SQLite file."""
    return database.sessions


class FrozenClock:
    """A settable UTC clock for quota days."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def clock() -> FrozenClock:
    """Return a clock at 2026-03-14 10:00 UTC."""
    return FrozenClock(datetime(2026, 3, 14, 10, 0, tzinfo=UTC))


async def no_sleep(_seconds: float) -> None:
    """Skip backoff waits in tests."""


async def until(condition: Callable[[], bool], *, limit_s: float = 60.0) -> None:
    """Wait until `condition()` holds, checking every 10 ms; fail after a generous `limit_s`.

    A state to reach, not a race: the limit only stops a broken test from hanging.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + limit_s
    while not condition():
        if loop.time() > give_up_at:
            pytest.fail(f"still waiting after {limit_s:g} s for {condition}")
        await asyncio.sleep(0.01)
