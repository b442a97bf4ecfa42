"""A typo in a setting's name stops every command with one line naming it, instead of being
silently ignored (a misspelt risk limit would leave the default in force)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from app.config import AgentConfig, Settings, load_settings, setting_names
from app.config_names import SettingNames
from app.errors import ConfigError
from app.providers import PROVIDERS
from tests.arena_cli import arena

REPO_ROOT = Path(__file__).resolve().parents[1]


def problems(**sources: str) -> list[str]:
    """Load settings from the files given (`toml=`, `dotenv=`); return the error's lines."""
    toml = sources.get("toml")
    dotenv = sources.get("dotenv")
    config_file = env_file = None
    if toml is not None:
        config_file = Path("arena.toml")
        config_file.write_text(toml, encoding="utf-8")
    if dotenv is not None:
        env_file = Path(".env")
        env_file.write_text(dotenv, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(env_file=env_file, config_file=config_file)
    return str(raised.value).splitlines()


def test_a_misspelt_key_under_a_section_of_the_toml_file_is_refused() -> None:
    (line,) = problems(toml="[risk]\nmax_leverge = 10\n")

    assert line.startswith("Unknown setting max_leverge under [risk] in arena.toml")
    assert "did you mean max_leverage?" in line


def test_a_misspelt_section_of_the_toml_file_is_refused() -> None:
    (line,) = problems(toml="[riskk]\nmax_leverage = 10\n")

    assert line.startswith("Unknown section [riskk] in arena.toml: did you mean [risk]?")


def test_a_misspelt_top_level_key_and_agent_key_are_refused() -> None:
    toml = 'symbol = ["BTC"]\n[[agents]]\nname = "a"\nprovider = "baseline"\nmodle = "x"\n'

    lines = problems(toml=toml)

    assert len(lines) == 2
    assert "Unknown setting symbol in arena.toml: did you mean symbols?" in lines[0]
    assert "Unknown setting modle under [[agents]] in arena.toml: did you mean model?" in lines[1]


def test_a_misspelt_name_in_dotenv_is_refused() -> None:
    (line,) = problems(dotenv="RISK_MAX_LEVERGE=5\n")

    assert line.startswith("Unknown setting RISK_MAX_LEVERGE in .env")
    assert "did you mean RISK_MAX_LEVERAGE?" in line


def test_a_misspelt_name_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISK_MAX_LEVERGE", "5")
    monkeypatch.setenv("SCHEDULE_INTERVALL", "5m")

    with pytest.raises(ConfigError) as raised:
        load_settings(env_file=None)

    lines = str(raised.value).splitlines()
    assert sorted(lines) == [
        "Unknown setting RISK_MAX_LEVERGE in the environment: did you mean RISK_MAX_LEVERAGE? "
        "(.env.example lists every setting)",
        "Unknown setting SCHEDULE_INTERVALL in the environment: did you mean SCHEDULE_INTERVAL? "
        "(.env.example lists every setting)",
    ]


def test_an_unknown_name_far_from_any_setting_lists_the_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "x")

    with pytest.raises(ConfigError, match=r"DATABASE_PASSWORD .*the DATABASE_\* settings are"):
        load_settings(env_file=None)


def test_unrelated_variables_and_the_provider_tools_own_names_are_left_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "PATH": "/usr/bin",
        "HOME": "/home/someone",
        "ARENA_SHARED_DATA": "/somewhere",
        "OPENAI_ORG_ID": "org-1",  # the OpenAI SDK's own
        "OPENAI_LOG": "debug",
        "RISKY": "1",
    }.items():
        monkeypatch.setenv(name, value)
    Path(".env").write_text("PYTHONPATH=.\nHF_TOKEN=x\n", encoding="utf-8")

    settings = load_settings(env_file=Path(".env"))

    assert settings.risk.max_leverage == 20


def test_a_near_miss_of_a_provider_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_API_KEYS", "ms-x")

    with pytest.raises(ConfigError, match="did you mean MODELSCOPE_API_KEY"):
        load_settings(env_file=None)


def test_a_near_miss_of_a_top_level_name_in_dotenv_is_refused() -> None:
    (line,) = problems(dotenv="SYMBOL=BTC\n")

    assert "did you mean SYMBOLS?" in line


def test_the_examples_use_only_valid_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """`.env.example` (every setting, commented out) and `arena.example.toml` pass the check."""
    example = (REPO_ROOT / ".env.example").read_text(encoding="utf-8")
    Path(".env").write_text(
        "\n".join(
            line.removeprefix("# ").removeprefix("#") for line in example.splitlines()
        ).replace("_API_KEY=\n", "_API_KEY=x\n"),
        encoding="utf-8",
    )

    load_settings(env_file=Path(".env"), config_file=REPO_ROOT / "arena.example.toml")


def test_the_names_come_from_the_settings_model_and_the_provider_registry() -> None:
    """A section added to Settings is checked without a list to keep in step."""

    class ExtraSection(BaseModel):
        port: int = 0

    class Extended(Settings):
        serve: ExtraSection = ExtraSection()

    names = SettingNames.of(Extended, lenient_sections=PROVIDERS)

    assert "SERVE_PORT" in names.env and names.prefixes["SERVE_"] is False
    assert names.unknown_env(["SERVE_PROT"], where="env") != []
    assert {f"{name.upper()}_" for name in PROVIDERS} <= set(setting_names().prefixes)
    assert all(setting_names().prefixes[f"{name.upper()}_"] for name in PROVIDERS)
    assert {"agents", "symbols"} <= set(Settings.model_fields)
    assert AgentConfig.model_fields.keys() >= {"name", "provider", "model"}


def test_every_command_stops_with_one_line_per_typo_and_exit_2() -> None:
    Path("arena.toml").write_text("[risk]\nmax_leverge = 10\n", encoding="utf-8")
    Path(".env").write_text("RISK_MAX_LEVERGE=5\n", encoding="utf-8")

    for command in (["config"], ["leaderboard"], ["start"], ["quota"]):
        result = arena(*command)

        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 2 and all(line.startswith("error: Unknown setting") for line in lines)
        assert "under [risk] in arena.toml: did you mean max_leverage?" in result.stderr
        assert "RISK_MAX_LEVERGE in .env: did you mean RISK_MAX_LEVERAGE?" in result.stderr
