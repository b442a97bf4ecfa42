"""Settings: sources and precedence, fix-it errors, and `.env.example` kept in step."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from app.config import AgentConfig, Settings, load_settings
from app.errors import ConfigError
from tests.arena_cli import arena

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = re.compile(r"^#?\s?([A-Z][A-Z0-9_]*)=(.*)$")


def settings_env_defaults() -> dict[str, Any]:
    """Map every environment name the Settings class reads to its default value."""
    defaults = Settings.model_construct()
    names: dict[str, Any] = {}
    for field_name in Settings.model_fields:
        value = getattr(defaults, field_name)
        if isinstance(value, BaseModel):
            for sub_name in type(value).model_fields:
                names[f"{field_name}_{sub_name}".upper()] = getattr(value, sub_name)
        else:
            names[field_name.upper()] = value
    return names


def env_example_entries() -> dict[str, str]:
    entries = {}
    for line in (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines():
        match = ASSIGNMENT.match(line.strip())
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def render_default(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(
            item.spec() if isinstance(item, AgentConfig) else str(item) for item in value
        )
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    return str(value)


def test_env_example_lists_exactly_the_settings() -> None:
    assert set(env_example_entries()) == set(settings_env_defaults())


def test_env_example_shows_each_default_with_a_comment() -> None:
    entries = env_example_entries()
    lines = (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    for name, default in settings_env_defaults().items():
        assert entries[name] == render_default(default), (
            f"{name}: .env.example shows a stale default"
        )
        index = next(
            i
            for i, line in enumerate(lines)
            if ASSIGNMENT.match(line.strip()) and ASSIGNMENT.match(line.strip()).group(1) == name
        )  # type: ignore[union-attr]
        assert lines[index - 1].startswith("# ") and not ASSIGNMENT.match(lines[index - 1]), (
            f"{name} needs a one-line comment above it"
        )


def test_arena_example_toml_is_the_six_coin_alpha_arena_setup_with_qwen_first() -> None:
    settings = load_settings(env_file=None, config_file=REPO_ROOT / "arena.example.toml")
    assert settings.symbols == ["BTC", "ETH", "SOL", "BNB", "XRP", "DOGE"]
    assert settings.agents[0].provider == "modelscope"
    assert settings.agents[0].model.startswith("Qwen/")
    assert any(agent.provider == "baseline" for agent in settings.agents)
    raw = tomllib.loads((REPO_ROOT / "arena.example.toml").read_text(encoding="utf-8"))
    assert "api_key" not in str(raw), "secrets belong in .env, not in the TOML example"


def test_environment_beats_dotenv_beats_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "arena.toml").write_text(
        "[risk]\nmax_leverage = 5\nfee_bps = 3.0\nslippage_bps = 7.0\n", encoding="utf-8"
    )
    (tmp_path / ".env").write_text("RISK_FEE_BPS=2.0\nRISK_SLIPPAGE_BPS=6.0\n", encoding="utf-8")
    monkeypatch.setenv("RISK_SLIPPAGE_BPS", "5.0")
    settings = load_settings(env_file=tmp_path / ".env")
    assert settings.risk.max_leverage == 5  # only in the TOML file
    assert settings.risk.fee_bps == 2.0  # .env over TOML
    assert settings.risk.slippage_bps == 5.0  # environment over .env


def test_flat_environment_names_reach_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_ID", "binanceusdm")
    monkeypatch.setenv("EXCHANGE_API_URL", "http://127.0.0.1:9999/")
    monkeypatch.setenv("EXCHANGE_SANDBOX", "true")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///elsewhere.db")
    monkeypatch.setenv("MODELSCOPE_API_KEY", "ms-test-key-0000")
    monkeypatch.setenv("SYMBOLS", "btc, eth")
    monkeypatch.setenv("AGENTS", "a=deepseek:deepseek-flash,b=baseline:buy_and_hold")
    settings = load_settings(env_file=None)
    assert settings.exchange.id == "binanceusdm"
    assert settings.exchange.api_url == "http://127.0.0.1:9999"
    assert settings.exchange.sandbox is True
    assert settings.database.url == "sqlite:///elsewhere.db"
    assert settings.symbols == ["BTC", "ETH"]
    assert [a.spec() for a in settings.agents] == [
        "a=deepseek:deepseek-flash",
        "b=baseline:buy_and_hold",
    ]
    assert settings.modelscope.api_key is not None
    assert "ms-test-key-0000" not in repr(settings)
    assert settings.secret_values() == ["ms-test-key-0000"]


def test_a_simulation_may_lower_the_cadence_floor_and_only_to_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The 1m floor holds by default; `SCHEDULE_MIN_CADENCE` (a run against an exchange of its
    own) lowers it, and the two cadences are checked against the lowered floor."""
    monkeypatch.setenv("SCHEDULE_INTERVAL", "5s")
    monkeypatch.setenv("SCHEDULE_MONITOR_INTERVAL", "5s")
    with pytest.raises(ConfigError, match="minimum of 1m"):
        load_settings(env_file=None)
    monkeypatch.setenv("SCHEDULE_MIN_CADENCE", "5s")
    settings = load_settings(env_file=None)
    assert (settings.schedule.interval, settings.schedule.monitor_interval) == ("5s", "5s")
    monkeypatch.setenv("SCHEDULE_INTERVAL", "2s")
    with pytest.raises(ConfigError, match=r"SCHEDULE_INTERVAL.*minimum of 5s"):
        load_settings(env_file=None)
    monkeypatch.setenv("SCHEDULE_MIN_CADENCE", "500ms")
    with pytest.raises(ConfigError, match="SCHEDULE_MIN_CADENCE"):
        load_settings(env_file=None)


def test_agent_spec_with_fallback_chain() -> None:
    agent = AgentConfig.from_spec("qwen=modelscope:Qwen/A|Qwen/B|Qwen/C")
    assert agent.models == ["Qwen/A", "Qwen/B", "Qwen/C"]
    assert AgentConfig.from_spec("local=openai:llama3:8b").model == "llama3:8b"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RISK_MAX_LEVERAGE": "lots"}, "RISK_MAX_LEVERAGE"),
        ({"SCHEDULE_INTERVAL": "every now and then"}, "SCHEDULE_INTERVAL"),
        ({"EXCHANGE_API_URL": "localhost:8080"}, "EXCHANGE_API_URL"),
        ({"AGENTS": "qwen=nowhere:model"}, "AGENTS"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"SYMBOLS": "BTC,BTC"}, "SYMBOLS"),
    ],
)
def test_malformed_setting_names_it(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    message = str(caught.value)
    assert named in message
    assert "\n" not in message


def test_missing_config_file_named_by_arena_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARENA_CONFIG", "nowhere.toml")
    with pytest.raises(ConfigError, match=r"ARENA_CONFIG points to nowhere\.toml"):
        load_settings(env_file=None)


def test_cli_malformed_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = arena("config", env={"RISK_MAX_LEVERAGE": "lots"})
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "RISK_MAX_LEVERAGE" in lines[0]
    assert "Traceback" not in result.stderr


def test_cli_missing_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = arena("config", env={"ARENA_CONFIG": "missing.toml"})
    assert result.exit_code == 2
    assert "ARENA_CONFIG" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_toml_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "arena.toml").write_text("[risk\nmax_leverage = 5\n", encoding="utf-8")
    result = arena("config", cwd=tmp_path)
    assert result.exit_code == 2
    assert "arena.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    result = arena("db", "upgrade", env={"DATABASE_URL": "sqlite:///data/x/arena.db"}, cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "data" / "x" / "arena.db").is_file()


def test_cli_config_masks_keys(tmp_path: Path) -> None:
    result = arena("config", "--json", env={"DEEPSEEK_API_KEY": "sk-canary0123456789abcdef"})
    assert result.exit_code == 0, result.stderr
    assert "canary" not in result.stdout + result.stderr
    assert '"api_key": "set"' in result.stdout


def test_every_registered_provider_has_its_key_and_url_settings_in_env_example() -> None:
    """The registry is the only list of providers: settings and .env.example follow it."""
    from app.providers import PROVIDERS

    entries = env_example_entries()
    settings = Settings()
    for name, traits in PROVIDERS.items():
        assert traits.key_env in entries and traits.base_url_env in entries
        assert entries[traits.base_url_env] == traits.default_base_url
        assert settings.provider_settings(name).base_url == traits.default_base_url
