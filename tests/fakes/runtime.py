"""Agents' chat models built the way the composition root builds them, for the LLM tests."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.config import AgentConfig, Settings
from app.db.session import Database
from app.domain import LlmMode
from app.llm.fallback import FallbackChain
from app.llm.openai_compat import Monotonic, Sleep
from app.llm.quota import Clock, utc_now
from app.llm.strategy import LLMStrategy
from app.wiring import build_chat_model, build_llm_runtime, build_llm_strategy


class LlmHarness:
    """One `LlmRuntime` from `app.wiring` and the agents' chains and strategies built over it."""

    def __init__(
        self,
        settings: Settings,
        *,
        session_factory: sessionmaker[Session] | None = None,
        cache_mode: LlmMode | None = None,
        clock: Clock = utc_now,
        sleep: Sleep | None = None,
        monotonic: Monotonic | None = None,
    ) -> None:
        database = None
        if session_factory is not None:
            engine = session_factory.kw["bind"]
            database = Database(url=str(engine.url), engine=engine, sessions=session_factory)
        self.settings = settings
        self.sleep = sleep
        self.monotonic = monotonic
        self.runtime = build_llm_runtime(settings, database=database, mode=cache_mode, clock=clock)
        self.quota = self.runtime.quota
        self.clients = self.runtime.clients
        self.cache = self.runtime.cache
        self.mode = self.runtime.mode

    def chat_model(self, agent: AgentConfig) -> FallbackChain:
        """Return the agent's fallback chain."""
        return build_chat_model(
            agent, self.settings, self.runtime, sleep=self.sleep, monotonic=self.monotonic
        )

    def strategy(self, agent: AgentConfig) -> LLMStrategy:
        """Return the agent's strategy."""
        return build_llm_strategy(
            agent, self.settings, self.runtime, sleep=self.sleep, monotonic=self.monotonic
        )

    async def aclose(self) -> None:
        """Close the runtime (flush cache hits, close clients)."""
        await self.runtime.aclose()
