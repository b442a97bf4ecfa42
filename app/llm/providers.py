"""The providers by the names users know: thin classes over the one adapter.

Each only names its registered `ProviderTraits` and a default model; everything else is
`OpenAIChatModel`, so `QwenProvider(api_key)` asks the default Qwen model on ModelScope.
`make_provider` builds the adapter of any registered provider by name.
"""

from __future__ import annotations

from typing import Final

from pydantic import SecretStr

from app.config import DEFAULT_MODELSCOPE_MODEL
from app.llm.openai_compat import CallDefaults, ClientPool, Monotonic, OpenAIChatModel, Sleep
from app.providers import DASHSCOPE, DEEPSEEK, MODELSCOPE, OPENAI, provider_traits

DEFAULT_DEEPSEEK_MODEL: Final = "deepseek-flash"
DEFAULT_QWQ_MODEL: Final = "qwq-plus"


class QwenProvider(OpenAIChatModel):
    """Qwen (or any served model) on ModelScope API-Inference: the default provider."""

    TRAITS = MODELSCOPE
    DEFAULT_MODEL = DEFAULT_MODELSCOPE_MODEL


class DeepSeekProvider(OpenAIChatModel):
    """DeepSeek's own API (`deepseek-flash`, `deepseek-v4-pro`); thinking via `ChatOptions`."""

    TRAITS = DEEPSEEK
    DEFAULT_MODEL = DEFAULT_DEEPSEEK_MODEL


class QwQProvider(OpenAIChatModel):
    """QwQ (`qwq-plus`, `qwq-32b`) on DashScope's compatible mode: streamed, always thinking."""

    TRAITS = DASHSCOPE
    DEFAULT_MODEL = DEFAULT_QWQ_MODEL


class OpenAICompatibleProvider(OpenAIChatModel):
    """Any OpenAI-compatible endpoint by base URL (a local Ollama or vLLM server, OpenAI...)."""

    TRAITS = OPENAI


def make_provider(
    provider: str,
    *,
    model: str,
    api_key: str | SecretStr | None,
    base_url: str | None = None,
    defaults: CallDefaults | None = None,
    clients: ClientPool | None = None,
    sleep: Sleep | None = None,
    monotonic: Monotonic | None = None,
    require_key: bool = True,
) -> OpenAIChatModel:
    """Return the adapter for `model` on the registered `provider` (e.g. `modelscope`)."""
    return OpenAIChatModel(
        api_key,
        model,
        traits=provider_traits(provider),
        base_url=base_url,
        defaults=defaults,
        clients=clients,
        sleep=sleep,
        monotonic=monotonic,
        require_key=require_key,
    )
