"""Fixtures for the gateway tests: a fake ModelScope upstream, the gateway served on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
import uvicorn

from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import Database, make_engine, make_session_factory
from app.errors import ConfigError
from app.wiring import build_gateway
from tests.fakes.openai_server import FakeOpenAIServer

KEY = "ms-gateway-test-key-not-real"
TIERS = ("Qwen/Tier1-Strong", "Qwen/Tier2-Middle", "Qwen/Tier3-Light")


class FrozenClock:
    """A settable UTC clock for quota days (shared by the gateway's thread and the test)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def pool_models(disabled: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Return the three-model pool: one model per tier 1-3, listed lightest first."""
    return [
        {"id": model, "tier": tier, "enabled": model not in disabled}
        for tier, model in sorted(enumerate(TIERS, start=1), reverse=True)
    ]


def make_settings(server: FakeOpenAIServer, db_url: str, **overrides: Any) -> Settings:
    """Return settings with the fake upstream as ModelScope and the three-model pool."""
    values: dict[str, Any] = {
        "modelscope": {"api_key": KEY, "base_url": server.base_url},
        "database": {"url": db_url},
        "pools": [{"name": "default", "models": pool_models()}],
        "agents": ["qwen=pool:default"],
        "llm": {"max_retries": 0},
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    started = threading.Event()
    while not server.started and thread.is_alive():
        started.wait(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Gateway:
    """A served gateway, its upstream, its clock, and what `/reload` will read next."""

    url: str
    upstream: FakeOpenAIServer
    clock: FrozenClock
    app: Any
    next_settings: list[Settings | ConfigError] = field(default_factory=list)

    def client(self, **kwargs: Any) -> openai.OpenAI:
        """Return an `openai` client of the gateway."""
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="anything", max_retries=0, **kwargs)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAIServer]:
    """Return a started fake ModelScope that only takes the server's own key."""
    server = FakeOpenAIServer("modelscope", api_key=KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(db_url: str) -> Database:
    """Return a freshly migrated SQLite file."""
    engine = make_engine(db_url)
    upgrade(db_url, engine=engine)
    return Database(url=db_url, engine=engine, sessions=make_session_factory(engine))


@pytest.fixture
def clock() -> FrozenClock:
    """Return a clock at 2026-03-14 10:00 UTC."""
    return FrozenClock(datetime(2026, 3, 14, 10, 0, tzinfo=UTC))


@pytest.fixture
def start_gateway(
    upstream: FakeOpenAIServer, database: Database, clock: FrozenClock, db_url: str
) -> Iterator[Callable[..., Gateway]]:
    """Return a factory serving a gateway over `upstream` (settings overridable)."""
    stack: list[Any] = []

    def start(**overrides: Any) -> Gateway:
        settings = make_settings(upstream, db_url, **overrides)
        pending: list[Settings | ConfigError] = []

        def reload_settings() -> Settings:
            found = pending.pop(0) if pending else settings
            if isinstance(found, ConfigError):
                raise found
            return found

        app = build_gateway(
            settings, reload_settings=reload_settings, database=database, clock=clock
        )
        context = served(app)
        url = context.__enter__()
        stack.append(context)
        return Gateway(url, upstream, clock, app, pending)

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def fake_openai() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """Return a factory of started fake servers, all stopped after the test."""
    started: list[FakeOpenAIServer] = []

    def start(flavor: str = "modelscope", **kwargs: Any) -> FakeOpenAIServer:
        server = FakeOpenAIServer(flavor, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
