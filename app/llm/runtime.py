"""Building agents' chat models from the settings, with the pieces they share.

`LlmRuntime` holds what every agent's calls share: one `AsyncOpenAI` client per endpoint and key,
the quota tracker (and its skips) and the response cache. The wiring builds one per process and
asks it for each agent's `LLMStrategy`; `aclose()` flushes the cache's hit counts and closes the
clients.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from app.config import AgentConfig, LlmMode, Settings
from app.errors import ConfigError
from app.llm.cache import ResponseCache
from app.llm.fallback import FallbackChain
from app.llm.openai_compat import CallDefaults, ClientPool, Monotonic, OpenAIChatModel, Sleep
from app.llm.providers import make_provider
from app.llm.quota import Clock, QuotaTracker, utc_now
from app.llm.strategy import DEFAULT_OPTIONS, LLMStrategy
from app.ports import ChatOptions


def call_defaults(settings: Settings) -> CallDefaults:
    """Return the per-call defaults of `settings.llm`."""
    llm = settings.llm
    return CallDefaults(
        timeout_s=llm.timeout_s,
        temperature=llm.temperature,
        max_tokens=llm.max_tokens,
        max_retries=llm.max_retries,
        retry_backoff_s=llm.retry_backoff_s,
    )


class LlmRuntime:
    """Shared SDK clients, quota tracker and response cache; builds each agent's chat model."""

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
        self.settings = settings
        self.mode: LlmMode = cache_mode or settings.llm.cache_mode
        if self.mode != "live" and session_factory is None:
            raise ConfigError(f"LLM cache mode {self.mode!r} needs the database (DATABASE_URL)")
        self.clients = ClientPool()
        self.quota = QuotaTracker(session_factory, clock=clock)
        self.cache = ResponseCache(session_factory, clock=clock) if session_factory else None
        self.defaults = call_defaults(settings)
        self._sleep = sleep
        self._monotonic = monotonic

    def provider(self, provider: str, model: str) -> OpenAIChatModel:
        """Return the adapter for `model` on `provider`, with its key and base URL."""
        if provider == "baseline":
            raise ConfigError(
                f"provider 'baseline' ({model}) is a rule-based agent, not a model provider"
            )
        endpoint = self.settings.provider_settings(provider)
        return make_provider(
            provider,
            model=model,
            api_key=endpoint.api_key,
            base_url=endpoint.base_url,
            defaults=self.defaults,
            clients=self.clients,
            sleep=self._sleep,
            monotonic=self._monotonic,
            require_key=self.mode != "replay",
        )

    def chat_model(self, agent: AgentConfig) -> FallbackChain:
        """Return `agent`'s fallback chain (its model, then its fallback models)."""
        models = [self.provider(agent.provider, model) for model in agent.models]
        return FallbackChain(
            models,
            agent=agent.name,
            quota=self.quota,
            cache=self.cache,
            mode=self.mode,
            monotonic=self._monotonic,
        )

    def strategy(self, agent: AgentConfig) -> LLMStrategy:
        """Return `agent` as an `LLMStrategy` over its fallback chain."""
        options = ChatOptions(json_mode=DEFAULT_OPTIONS.json_mode, thinking=agent.thinking)
        return LLMStrategy(agent.name, self.chat_model(agent), options=options)

    async def aclose(self) -> None:
        """Flush the cache's hit counts and close the SDK clients."""
        if self.cache is not None:
            self.cache.close()
        await self.clients.aclose()


def build_chat_model(
    agent: AgentConfig,
    settings: Settings,
    *,
    runtime: LlmRuntime | None = None,
    session_factory: sessionmaker[Session] | None = None,
) -> FallbackChain:
    """Return `agent`'s chat model; pass one shared `runtime` when building several agents."""
    runtime = runtime or LlmRuntime(settings, session_factory=session_factory)
    return runtime.chat_model(agent)


def build_llm_strategy(
    agent: AgentConfig,
    settings: Settings,
    *,
    runtime: LlmRuntime | None = None,
    session_factory: sessionmaker[Session] | None = None,
) -> LLMStrategy:
    """Return `agent` as an `LLMStrategy`; pass one shared `runtime` for several agents."""
    runtime = runtime or LlmRuntime(settings, session_factory=session_factory)
    return runtime.strategy(agent)
