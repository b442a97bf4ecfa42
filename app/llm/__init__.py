"""LLM adapters: OpenAI-compatible providers, baselines and the response cache.

`from app.llm import QwenProvider, DeepSeekProvider, QwQProvider, OpenAICompatibleProvider,
LLMStrategy` gives the names users know; `LlmRuntime` builds every agent's chat model from the
settings (shared clients, quota tracking, cache).
"""

from app.llm.cache import ResponseCache, cache_key
from app.llm.fallback import FallbackChain
from app.llm.openai_compat import CallDefaults, ClientPool, OpenAIChatModel
from app.llm.providers import (
    DeepSeekProvider,
    OpenAICompatibleProvider,
    QwenProvider,
    QwQProvider,
    make_provider,
)
from app.llm.quota import QuotaTracker
from app.llm.runtime import LlmRuntime, build_chat_model, build_llm_strategy
from app.llm.strategy import LLMStrategy

__all__ = [
    "CallDefaults",
    "ClientPool",
    "DeepSeekProvider",
    "FallbackChain",
    "LLMStrategy",
    "LlmRuntime",
    "OpenAIChatModel",
    "OpenAICompatibleProvider",
    "QuotaTracker",
    "QwQProvider",
    "QwenProvider",
    "ResponseCache",
    "build_chat_model",
    "build_llm_strategy",
    "cache_key",
    "make_provider",
]
