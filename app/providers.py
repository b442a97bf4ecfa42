"""The provider registry: every model provider the arena knows, as data, in one place.

Each `ProviderTraits` says what a provider is called, which settings hold its key and endpoint
(`MODELSCOPE_API_KEY`, `MODELSCOPE_BASE_URL`...), its default base URL, and what its models accept
and how they fail. The settings, the `--agent` help, the key checks and `.env.example` (kept in
step by a test) derive from `PROVIDERS`; the one adapter (`app.llm.openai_compat`) reads the
traits instead of branching on provider names. Facts behind each value: docs/providers.md.

Adding a provider is one `ProviderTraits` value added to `PROVIDERS` (see docs/providers.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from app.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ModelTraits:
    """How to ask one model, resolved from its provider's defaults and the rules it matches."""

    # A non-stream call is refused (QwQ, `*-Thinking-*`): always stream.
    stream_only: bool = False
    # Send `temperature`; False where the model silently ignores sampling parameters.
    sampling: bool = True
    # Merge system messages into the first user message (QwQ works best without a system role).
    fold_system: bool = False
    # Send `response_format={"type": "json_object"}` when JSON is asked for.
    json_mode: bool = False
    # Thinking models answer slowly: never wait less than this, whatever the settings say.
    min_timeout_s: float = 0.0
    # `extra_body` fragments that switch thinking on or off; None where the model has no switch.
    thinking_on: Mapping[str, Any] | None = None
    thinking_off: Mapping[str, Any] | None = None
    # Thinking is refused in a non-stream call: stream when thinking, switch it off otherwise.
    thinking_needs_stream: bool = False
    # Ask for token usage in the last stream chunk (`stream_options.include_usage`).
    stream_usage: bool = True


@dataclass(frozen=True, slots=True)
class ModelRule:
    """Overrides of `ModelTraits` fields for model ids matching `pattern` (case-insensitive)."""

    pattern: str
    overrides: Mapping[str, Any]

    def matches(self, model: str) -> bool:
        """Return True when `model` matches this rule."""
        return re.search(self.pattern, model, flags=re.IGNORECASE) is not None


@dataclass(frozen=True, slots=True)
class ProviderTraits:
    """One OpenAI-compatible provider: endpoint, key, per-model rules and error vocabulary."""

    name: str
    label: str
    default_base_url: str
    key_help: str
    defaults: ModelTraits = field(default_factory=ModelTraits)
    rules: tuple[ModelRule, ...] = ()
    # Local OpenAI-compatible servers accept any key; the hosted providers refuse a missing one.
    key_required: bool = True
    # Response headers worth keeping (quota and rate limits), by lowercase prefix.
    rate_limit_header_prefixes: tuple[str, ...] = ("modelscope-ratelimit-", "x-ratelimit-")
    # How long a model that answered a 429 that is not "the day's quota is used up" is skipped
    # (a per-minute rate limit, "too fast"): this many seconds, doubled for each further 429 in a
    # row (backoff) up to `rate_limit_max_cooldown_s`, and never past the end of the quota day.
    # None means every 429 of this provider benches the model until the next quota day.
    rate_limit_cooldown_s: float | None = 60.0
    rate_limit_max_cooldown_s: float = 900.0
    # Rate-limit headers whose value "0" on a 429 says the day's quota is used up (ModelScope's
    # daily per-model and per-account remainders): then the model waits for the next quota day.
    day_quota_headers: tuple[str, ...] = (
        "modelscope-ratelimit-model-requests-remaining",
        "modelscope-ratelimit-requests-remaining",
    )
    # Lowercase fragments of error messages, by meaning.
    not_served_markers: tuple[str, ...] = (
        "has no provider supported",
        "model not exist",
        "model_not_found",
        "does not exist",
    )
    quota_markers: tuple[str, ...] = ("limit exceeded", "达到使用量上限")
    # Quota gone for the day even where a plain 429 only means "slow down".
    day_quota_markers: tuple[str, ...] = (
        "insufficient_quota",
        "allocationquota",
        "free allocated quota",
    )
    billing_markers: tuple[str, ...] = ("insufficient balance", "arrearage")

    @property
    def key_env(self) -> str:
        """Return the setting that holds this provider's API key (e.g. `MODELSCOPE_API_KEY`)."""
        return f"{self.name.upper()}_API_KEY"

    @property
    def base_url_env(self) -> str:
        """Return the setting that holds this provider's base URL (e.g. `MODELSCOPE_BASE_URL`)."""
        return f"{self.name.upper()}_BASE_URL"

    def model_traits(self, model: str) -> ModelTraits:
        """Return the traits of `model`: the defaults with every matching rule applied in order."""
        traits = self.defaults
        for rule in self.rules:
            if rule.matches(model):
                traits = replace(traits, **dict(rule.overrides))
        return traits


_ENABLE_THINKING_ON: Final = {"enable_thinking": True}
_ENABLE_THINKING_OFF: Final = {"enable_thinking": False}
# Open-source hybrid Qwen3 checkpoints (`Qwen3-32B`, `Qwen3-235B-A22B`): thinking by default,
# and a non-stream call with thinking on is a 400. The `-Instruct-2507` ones never think.
_HYBRID_QWEN3: Final = ModelRule(
    pattern=r"(^|/)qwen3-[\d.]+b(-a[\d.]+b)?$",
    overrides={
        "thinking_on": _ENABLE_THINKING_ON,
        "thinking_off": _ENABLE_THINKING_OFF,
        "thinking_needs_stream": True,
    },
)
_THINKING_ONLY: Final = ModelRule(
    pattern=r"thinking|qwq",
    overrides={"stream_only": True, "json_mode": False, "min_timeout_s": 60.0},
)

MODELSCOPE: Final = ProviderTraits(
    name="modelscope",
    label="ModelScope",
    default_base_url="https://api-inference.modelscope.cn/v1",
    key_help="create an access token at https://modelscope.cn/my/myaccesstoken",
    rules=(
        _HYBRID_QWEN3,
        _THINKING_ONLY,
        # JSON mode was seen working for DeepSeek V4 served by ModelScope.
        ModelRule(pattern=r"^deepseek-ai/deepseek-v", overrides={"json_mode": True}),
    ),
    # The same 429 body ("Request limit exceeded.") means a per-minute limit or the daily quota;
    # only a remaining count of 0 in the rate-limit headers says the day's quota is gone.
    rate_limit_cooldown_s=60.0,
)

DASHSCOPE: Final = ProviderTraits(
    name="dashscope",
    label="DashScope",
    default_base_url="https://dashscope.aliyuncs.com/compatible-mode/v1",
    key_help="create a key in the Model Studio console (https://bailian.console.aliyun.com)",
    rules=(
        _HYBRID_QWEN3,
        _THINKING_ONLY,
        # QwQ: stream only, ignores sampling, no JSON mode, better without a system message.
        ModelRule(pattern=r"^qwq", overrides={"sampling": False, "fold_system": True}),
    ),
    rate_limit_cooldown_s=60.0,
)

DEEPSEEK: Final = ProviderTraits(
    name="deepseek",
    label="DeepSeek",
    default_base_url="https://api.deepseek.com",
    key_help="create a key at https://platform.deepseek.com/api_keys",
    # Thinking is on by default on the current models and is switched in the request body;
    # JSON mode works on both (the prompt must say "json").
    defaults=ModelTraits(
        json_mode=True,
        thinking_on={"thinking": {"type": "enabled"}},
        thinking_off={"thinking": {"type": "disabled"}},
    ),
    # DeepSeek's 429 means "over the concurrency limit", not "out of quota for the day".
    rate_limit_cooldown_s=60.0,
)

OPENAI: Final = ProviderTraits(
    name="openai",
    label="OpenAI-compatible server",
    default_base_url="https://api.openai.com/v1",
    key_help="set the key your server expects (local servers such as Ollama accept any text)",
    key_required=False,
    rate_limit_cooldown_s=60.0,
)

# Every model provider, in the order settings and help list them.
PROVIDERS: Final[Mapping[str, ProviderTraits]] = {
    traits.name: traits for traits in (MODELSCOPE, DEEPSEEK, DASHSCOPE, OPENAI)
}
# Rule-based agents (`hodl=baseline:buy_and_hold`) answer without a model provider.
BASELINE: Final = "baseline"
# An agent on a model pool (`qwen=pool:default`) asks the pool's models in tier order.
POOL: Final = "pool"
# What an agent spec's PROVIDER may be.
AGENT_PROVIDERS: Final[tuple[str, ...]] = (*PROVIDERS, BASELINE, POOL)


def provider_traits(name: str) -> ProviderTraits:
    """Return the registered provider `name`; `ConfigError` naming the known ones otherwise."""
    found = PROVIDERS.get(name)
    if found is None:
        raise ConfigError(f"{name!r} is not a model provider; use one of {', '.join(PROVIDERS)}")
    return found


# The Qwen vision-language family: Qwen/Qwen3-VL-30B-A3B-Instruct, qwen-vl-max,
# qwen2.5-vl-72b-instruct, qwen3-vl-plus (any provider, any case).
_QWEN_VL: Final = re.compile(r"qwen[\w.]*-vl", re.IGNORECASE)


def takes_images(model: str, extra_models: Iterable[str] = ()) -> bool:
    """Return True for a model known to read images: the Qwen-VL family, or one of
    `extra_models` (the `[vision] models` setting, compared without case)."""
    if _QWEN_VL.search(model):
        return True
    return model.lower() in {name.lower() for name in extra_models}
