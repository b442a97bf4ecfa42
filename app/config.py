"""Settings: one `Settings` object read from the environment, `.env`, then the TOML config file.

Every setting has an environment name made of its section and field, e.g. `risk.max_leverage` is
`RISK_MAX_LEVERAGE` and `exchange.id` is `EXCHANGE_ID`; the TOML file uses the same sections.
The environment wins over `.env`, which wins over the TOML file (`ARENA_CONFIG`, default
`arena.toml`). `.env.example` lists every name with its default.
"""

from __future__ import annotations

import functools
import json
import os
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from app.config_names import SettingNames
from app.domain import ALPHA_ARENA_COINS, LlmMode, timeframe_to_timedelta
from app.errors import ConfigError
from app.providers import AGENT_PROVIDERS, POOL, PROVIDERS

DEFAULT_MODELSCOPE_MODEL: Final = "Qwen/Qwen3-235B-A22B-Instruct-2507"
DEFAULT_CONFIG_FILE: Final = "arena.toml"
DEFAULT_ENV_FILE: Final = ".env"

_config_file_var: ContextVar[Path | None] = ContextVar("arena_config_file", default=None)


class AgentConfig(BaseModel):
    """One competitor: a name, a provider and a model (plus models to fall back to)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    # A registered model provider (`app.providers.PROVIDERS`) or `baseline`.
    provider: str
    model: str = Field(min_length=1)
    fallback_models: list[str] = Field(default_factory=list)
    starting_cash_usd: float | None = Field(default=None, gt=0)
    # Thinking on/off where the provider has a switch (DeepSeek, hybrid Qwen3); None: its default.
    thinking: bool | None = None
    # Chart images in the prompt: None decides by the model (the Qwen-VL family and the models
    # in `[vision] models` take images), True or False decides for this agent.
    vision: bool | None = None

    @classmethod
    def from_spec(cls, spec: str) -> AgentConfig:
        """Parse `NAME=PROVIDER:MODEL[|FALLBACK_MODEL...]`, e.g. `hodl=baseline:buy_and_hold`."""
        name, sep, rest = spec.strip().partition("=")
        provider, sep2, models = rest.partition(":")
        if not sep or not sep2 or not name or not models:
            raise ValueError(
                f"agent spec {spec!r} is not NAME=PROVIDER:MODEL "
                "(e.g. qwen=modelscope:Qwen/Qwen3-235B-A22B-Instruct-2507)"
            )
        provider = provider.strip().lower()
        if provider not in AGENT_PROVIDERS:
            raise ValueError(
                f"agent spec {spec!r}: unknown provider {provider!r}; "
                f"use one of {', '.join(AGENT_PROVIDERS)}"
            )
        chain = [model.strip() for model in models.split("|") if model.strip()]
        return cls.model_validate(
            {
                "name": name.strip(),
                "provider": provider,
                "model": chain[0],
                "fallback_models": chain[1:],
            }
        )

    @field_validator("provider", mode="before")
    @classmethod
    def _check_provider(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in AGENT_PROVIDERS:
                known = ", ".join(AGENT_PROVIDERS)
                raise ValueError(f"unknown provider {value!r}; use one of {known}")
        return value

    @property
    def models(self) -> list[str]:
        """Return the fallback chain: the main model first."""
        return [self.model, *self.fallback_models]

    def spec(self) -> str:
        """Return the agent as a `NAME=PROVIDER:MODEL` spec."""
        return f"{self.name}={self.provider}:{'|'.join(self.models)}"


class ExchangeSettings(BaseModel):
    """Where market data comes from."""

    id: str = "hyperliquid"
    api_url: str | None = None
    sandbox: bool = False
    timeout_s: float = Field(default=10.0, gt=0)
    quote: str | None = None
    # How long `arena run` waits at start for an unreachable exchange, retrying with backoff.
    startup_retry_s: float = Field(default=300.0, ge=0)
    # A candle price beyond this band around its neighbours' median close is implausible and
    # dropped (200: from a third to three times it); live candles and candle files alike.
    max_candle_move_pct: float = Field(default=200.0, gt=0)
    # Ticker and newest intraday close further apart than this: the cycle is skipped.
    max_price_gap_pct: float = Field(default=5.0, gt=0)

    @field_validator("api_url")
    @classmethod
    def _check_api_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. http://127.0.0.1:8080)")
        return value.rstrip("/")


class RiskSettings(BaseModel):
    """Limits every entry is checked against, and the simulation's costs."""

    starting_cash_usd: float = Field(default=10_000.0, gt=0)
    max_leverage: int = Field(default=20, ge=1, le=100)
    max_position_margin_pct: float = Field(default=50.0, gt=0, le=100)
    max_open_positions: int | None = Field(default=None, ge=1)
    max_entries_per_hour: int | None = Field(default=None, ge=1)
    fee_bps: float = Field(default=4.5, ge=0, le=1000)
    slippage_bps: float = Field(default=1.0, ge=0, le=1000)
    maintenance_margin_rate: float = Field(default=0.005, ge=0, lt=1)


class ScheduleSettings(BaseModel):
    """The daemon's clock: decision cadence, exit-monitor cadence and candle timeframes."""

    # The shortest cadence accepted. Exchanges close candles by the minute; only a simulation
    # against an exchange of its own (the fault-injection run) goes below it.
    min_cadence: str = "1m"
    interval: str = "3m"
    monitor_interval: str = "1m"
    intraday_timeframe: str = "3m"
    context_timeframe: str = "4h"
    history_candles: int = Field(default=200, ge=60, le=1500)

    @field_validator("interval", "monitor_interval", "intraday_timeframe", "context_timeframe")
    @classmethod
    def _check_timeframe(cls, value: str) -> str:
        timeframe_to_timedelta(value)
        return value

    @field_validator("min_cadence")
    @classmethod
    def _check_min_cadence(cls, value: str) -> str:
        if timeframe_to_timedelta(value) < timedelta(seconds=1):
            raise ValueError(f"{value} is shorter than one second")
        return value

    @field_validator("interval", "monitor_interval")
    @classmethod
    def _check_cadence_floor(cls, value: str, info: ValidationInfo) -> str:
        # Exchanges close candles by the minute (the exits read 1m candles) and a cycle starts
        # 2 s after its boundary: a shorter cadence decides again on the same closed candles,
        # and no model answers within it.
        floor = info.data.get("min_cadence", "1m")
        if timeframe_to_timedelta(value) < timeframe_to_timedelta(floor):
            raise ValueError(
                f"{value} is shorter than the minimum of {floor} (candles close by the minute)"
            )
        return value


class LlmSettings(BaseModel):
    """How models are asked."""

    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=4096, ge=64)
    cache_mode: LlmMode = LlmMode.LIVE


class VisionSettings(BaseModel):
    """Charts for vision agents: size limits per image and request, extra models taking images."""

    max_image_width_px: int = Field(default=1024, ge=256, le=4096)
    max_image_height_px: int = Field(default=1024, ge=256, le=4096)
    max_image_bytes: int = Field(default=1_000_000, ge=10_000, le=10_000_000)
    max_images_per_request: int = Field(default=4, ge=1, le=16)
    # Model ids that take images besides the Qwen-VL family, e.g. a local vision model.
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, list):
            return [str(item).strip() for item in value if str(item).strip()]
        return value


class ProviderSettings(BaseModel):
    """Credentials and endpoint of one OpenAI-compatible provider."""

    api_key: SecretStr | None = None
    base_url: str | None = None


class PoolModelConfig(BaseModel):
    """One model of a pool: where it is served, how strong it is, whether it may be asked."""

    id: str = Field(min_length=1)
    provider: str = "modelscope"
    # 1 = strongest ... 4 = lightest; a pool asks its models by tier, then in listed order.
    tier: int = Field(default=1, ge=1, le=4)
    enabled: bool = True
    name: str | None = None

    @field_validator("provider", mode="before")
    @classmethod
    def _check_provider(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            if value not in PROVIDERS:
                raise ValueError(f"unknown provider {value!r}; use one of {', '.join(PROVIDERS)}")
        return value


class PoolConfig(BaseModel):
    """A named, ordered set of models that agents (`NAME=pool:POOL`) and the gateway ask."""

    name: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    models: list[PoolModelConfig] = Field(min_length=1)

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: list[PoolModelConfig]) -> list[PoolModelConfig]:
        keys = [(model.provider, model.id) for model in value]
        repeated = sorted({f"{p}:{m}" for p, m in keys if keys.count((p, m)) > 1})
        if repeated:
            raise ValueError(f"a model may appear once per pool; repeated: {', '.join(repeated)}")
        return value

    def ordered(self, *, enabled_only: bool = True) -> list[PoolModelConfig]:
        """Return the models by tier (strongest first), then in listed order."""
        chosen = [m for m in self.models if m.enabled or not enabled_only]
        return sorted(chosen, key=lambda model: model.tier)  # sorted() is stable


class GatewaySettings(BaseModel):
    """The OpenAI-compatible gateway in front of the pools (`arena gateway`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65_535)
    # Required to bind anything but a loopback address; clients send it as a bearer token.
    token: SecretStr | None = None
    # The pool a request gets when it names none (`model: "pool"` or no pool header).
    default_pool: str = "default"
    max_body_bytes: int = Field(default=1_000_000, ge=1_000, le=50_000_000)
    # The whole request's time budget: retries and fallback models included.
    request_budget_s: float = Field(default=300.0, gt=0)
    # Complexity routing: off, the deterministic heuristic, or a model scoring the request.
    routing: Literal["off", "heuristic", "llm"] = "off"
    # The scorer model for `routing = "llm"`, as PROVIDER:MODEL (e.g. openai:qwen2.5:1.5b).
    scorer_model: str | None = None
    scorer_timeout_s: float = Field(default=10.0, gt=0)
    # The tier used when routing is on but the scorer fails.
    default_tier: int = Field(default=1, ge=1, le=4)

    @field_validator("scorer_model")
    @classmethod
    def _check_scorer(cls, value: str | None) -> str | None:
        if value is None:
            return None
        provider, sep, model = value.partition(":")
        if not sep or not model or provider.strip().lower() not in PROVIDERS:
            raise ValueError(
                f"must be PROVIDER:MODEL with a provider among {', '.join(PROVIDERS)} "
                "(e.g. openai:qwen2.5:1.5b)"
            )
        return value


class DatabaseSettings(BaseModel):
    """Where everything is recorded."""

    url: str = "sqlite:///data/arena.db"


class ServeSettings(BaseModel):
    """The dashboard and its read API (`arena serve`, and `arena run` unless `--no-serve`)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65_535)
    # Required to bind anything but a loopback address: a bearer token, or a login for the pages.
    token: SecretStr | None = None


class LogSettings(BaseModel):
    """Logging level (and an optional file)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    file: str | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string for list settings given as text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class _SettingsBase(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
    )


def _endpoint_field(default_base_url: str) -> Any:
    return Field(default_factory=lambda: ProviderSettings(base_url=default_base_url))


# One `ProviderSettings` field per registered provider (`modelscope`, `deepseek`...), so
# `MODELSCOPE_API_KEY` is `modelscope.api_key`; the registry is the only list of them.
if TYPE_CHECKING:
    _WithProviders = _SettingsBase
else:
    _WithProviders = create_model(
        "_WithProviders",
        __base__=_SettingsBase,
        **{
            name: (ProviderSettings, _endpoint_field(traits.default_base_url))
            for name, traits in PROVIDERS.items()
        },
    )


class Settings(_WithProviders):
    """All settings of the arena. Build it with `load_settings()`."""

    arena_config: str = DEFAULT_CONFIG_FILE
    symbols: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(ALPHA_ARENA_COINS))
    agents: Annotated[list[AgentConfig], NoDecode] = Field(
        default_factory=lambda: [
            AgentConfig(name="qwen", provider="modelscope", model=DEFAULT_MODELSCOPE_MODEL)
        ]
    )
    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    vision: VisionSettings = Field(default_factory=VisionSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    pools: Annotated[list[PoolConfig], NoDecode] = Field(default_factory=list)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)

    @field_validator("symbols", mode="before")
    @classmethod
    def _parse_symbols(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, list):
            return [str(item).strip().upper().split("/")[0] for item in value]
        return value

    @field_validator("symbols")
    @classmethod
    def _check_symbols(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("list at least one coin, e.g. BTC,ETH,SOL,BNB,XRP,DOGE")
        if len(set(value)) != len(value):
            raise ValueError("each coin may appear only once")
        return value

    @field_validator("agents", mode="before")
    @classmethod
    def _parse_agents(cls, value: Any) -> Any:
        value = _split_list(value)
        if isinstance(value, list):
            return [
                AgentConfig.from_spec(item) if isinstance(item, str) else item for item in value
            ]
        return value

    @field_validator("agents")
    @classmethod
    def _check_agents(cls, value: list[AgentConfig]) -> list[AgentConfig]:
        names = [agent.name for agent in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"agent names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @field_validator("pools", mode="before")
    @classmethod
    def _parse_pools(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value)
        return value

    @field_validator("pools")
    @classmethod
    def _check_pools(cls, value: list[PoolConfig]) -> list[PoolConfig]:
        names = [pool.name for pool in value]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _check_pool_agents(self) -> Settings:
        known = {pool.name for pool in self.pools}
        for agent in self.agents:
            if agent.provider == POOL and agent.model not in known:
                listed = ", ".join(sorted(known)) or "none configured ([[pools]] in arena.toml)"
                raise ValueError(
                    f"agent {agent.name} asks pool {agent.model!r}, which is not one (pools: "
                    f"{listed})"
                )
            if agent.provider == POOL and agent.fallback_models:
                raise ValueError(
                    f"agent {agent.name}: a pool agent takes no fallback models (list them in "
                    "the pool)"
                )
        return self

    def pool(self, name: str) -> PoolConfig | None:
        """Return the pool called `name`, or None."""
        return next((pool for pool in self.pools if pool.name == name), None)

    def agent_chain(self, agent: AgentConfig) -> list[tuple[str, str]]:
        """Return the (provider, model) pairs `agent` asks in order: its chain or its pool's."""
        if agent.provider == POOL:
            pool = self.pool(agent.model)
            ordered = pool.ordered() if pool is not None else []
            return [(model.provider, model.id) for model in ordered]
        return [(agent.provider, model) for model in agent.models]

    @model_validator(mode="after")
    def _check_cadence(self) -> Settings:
        interval = timeframe_to_timedelta(self.schedule.interval)
        monitor = timeframe_to_timedelta(self.schedule.monitor_interval)
        if monitor > interval:
            raise ValueError(
                "schedule.monitor_interval must not be longer than schedule.interval "
                "(exits are checked between decisions)"
            )
        return self

    def provider_settings(self, provider: str) -> ProviderSettings:
        """Return the credentials and endpoint of `provider`."""
        if provider not in PROVIDERS:
            raise ConfigError(f"provider {provider!r} has no API settings")
        settings: ProviderSettings = getattr(self, provider)
        return settings

    def secret_values(self) -> list[str]:
        """Return every configured secret (for the log filter that masks them)."""
        values: list[str] = []
        for provider in PROVIDERS:
            key = self.provider_settings(provider).api_key
            if key is not None and key.get_secret_value():
                values.append(key.get_secret_value())
        for token in (self.serve.token, self.gateway.token):
            if token is not None and token.get_secret_value():
                values.append(token.get_secret_value())
        return values

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _config_file_var.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings, dotenv_settings]
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)


def env_name(loc: tuple[str | int, ...]) -> str:
    """Return the environment name of a settings location: ('risk', 'fee_bps') -> RISK_FEE_BPS."""
    parts = [str(part) for part in loc[:2] if isinstance(part, str)]
    return "_".join(parts).upper()


def _read_dotenv_value(env_file: Path | None, name: str) -> str | None:
    if env_file is None or not env_file.is_file():
        return None
    for line in env_file.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip().upper() == name:
            return value.strip().strip("'\"") or None
    return None


def resolve_config_file(env_file: Path | None, config_file: Path | None) -> Path | None:
    """Return the TOML file to read: explicit, then `ARENA_CONFIG`, then `arena.toml` if present."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(
                f"--config {config_file}: no such file; create it "
                "(cp arena.example.toml arena.toml) or leave --config out"
            )
        return config_file
    explicit = os.environ.get("ARENA_CONFIG") or _read_dotenv_value(env_file, "ARENA_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f"ARENA_CONFIG points to {path}, which does not exist: create it "
                "(cp arena.example.toml arena.toml) or unset ARENA_CONFIG"
            )
        return path
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.is_file() else None


@contextmanager
def _config_file(path: Path | None) -> Iterator[None]:
    token = _config_file_var.set(path)
    try:
        yield
    finally:
        _config_file_var.reset(token)


def describe_validation_error(error: ValidationError, config_file: Path | None) -> str:
    """Turn a pydantic error into one line per bad setting, naming it and saying how to fix it."""
    where = f" or {config_file}" if config_file is not None else " or arena.toml"
    lines = []
    for item in error.errors():
        loc = tuple(item.get("loc", ()))
        name = env_name(loc) if loc else "settings"
        toml_key = ".".join(str(part) for part in loc) if loc else ""
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(
            f"Invalid setting {name} ({toml_key}): {message}{shown}. "
            f"Fix it in the environment, .env{where}; .env.example lists every setting."
        )
    return "\n".join(lines)


@functools.cache
def setting_names() -> SettingNames:
    """Return every name `Settings` accepts (the provider sections from the registry)."""
    return SettingNames.of(Settings, lenient_sections=PROVIDERS)


def check_setting_names(toml_path: Path | None, dotenv_file: Path | None) -> None:
    """Raise `ConfigError`, one line per problem, when a setting name is not one (a typo)."""
    names = setting_names()
    problems = names.unknown_env(os.environ, where="the environment")
    if dotenv_file is not None:
        values = dotenv_values(dotenv_file)
        problems += names.unknown_env(values, where=str(dotenv_file), dotenv=True)
    if toml_path is not None:
        try:
            document = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"Could not read the settings from {toml_path}: {error}") from None
        problems += names.unknown_toml(document, where=str(toml_path))
    if problems:
        raise ConfigError("\n".join(problems))


def load_settings(
    *,
    env_file: Path | None = Path(DEFAULT_ENV_FILE),
    config_file: Path | None = None,
    **overrides: Any,
) -> Settings:
    """Read the settings; raise `ConfigError` with a fix-it line per bad or unknown setting."""
    toml_path = resolve_config_file(env_file, config_file)
    dotenv_file = env_file if env_file is not None and env_file.is_file() else None
    check_setting_names(toml_path, dotenv_file)
    try:
        with _config_file(toml_path):
            return Settings(_env_file=dotenv_file, **overrides)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, toml_path)) from None
    except (ValueError, OSError) as error:
        where = toml_path if toml_path is not None else ".env"
        raise ConfigError(f"Could not read the settings from {where}: {error}") from None
