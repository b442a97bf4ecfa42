"""LLM adapters: OpenAI-compatible providers, fallback chains, quota tracking, baselines.

`from app.llm import QwenProvider, DeepSeekProvider, QwQProvider, OpenAICompatibleProvider,
LLMStrategy` gives the names users know; the composition root (`app.wiring`) builds every
agent's chat model over one `LlmRuntime` (shared clients, quota tracker, answer cache).
"""

from app.llm.cache import cache_key
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
from app.llm.runtime import LlmRuntime
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
    "cache_key",
    "make_provider",
]
