"""Pools in the settings: order, validation, pool agents in `arena config` and `arena quota`."""

from __future__ import annotations

import json

import pytest

from app.config import Settings, load_settings
from app.errors import ConfigError
from app.wiring import missing_keys
from tests.arena_cli import arena

POOLS = [
    {
        "name": "default",
        "models": [
            {"id": "Qwen/Light", "tier": 3},
            {"id": "Qwen/Strong-A", "tier": 1},
            {"id": "Qwen/Off", "tier": 1, "enabled": False},
            {"id": "deepseek-flash", "provider": "deepseek", "tier": 2, "name": "ds"},
            {"id": "Qwen/Strong-B", "tier": 1},
        ],
    },
    {"name": "light", "models": [{"id": "Qwen/Light"}]},
]


def test_a_pool_agent_asks_the_enabled_models_by_tier_then_as_listed() -> None:
    settings = Settings(pools=POOLS, agents=["qwen=pool:default", "solo=modelscope:Qwen/X|Qwen/Y"])
    assert settings.agent_chain(settings.agents[0]) == [
        ("modelscope", "Qwen/Strong-A"),
        ("modelscope", "Qwen/Strong-B"),
        ("deepseek", "deepseek-flash"),
        ("modelscope", "Qwen/Light"),
    ]
    assert settings.agent_chain(settings.agents[1]) == [
        ("modelscope", "Qwen/X"),
        ("modelscope", "Qwen/Y"),
    ]
    missing = missing_keys(settings, settings.agents)
    assert missing == {
        "MODELSCOPE_API_KEY": ["qwen", "solo"],
        "DEEPSEEK_API_KEY": ["qwen"],
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"agents": ["qwen=pool:nope"]}, "asks pool 'nope', which is not one"),
        ({"agents": ["qwen=pool:default|Qwen/X"]}, "takes no fallback models"),
        ({"pools": [*POOLS, POOLS[1]]}, "pool names must be unique"),
        (
            {"pools": [{"name": "p", "models": [{"id": "A"}, {"id": "A"}]}]},
            "repeated: modelscope:A",
        ),
        ({"pools": [{"name": "p", "models": [{"id": "A", "tier": 5}]}]}, "less than or equal to 4"),
        (
            {"pools": [{"name": "p", "models": [{"id": "A", "provider": "acme"}]}]},
            "unknown provider",
        ),
        ({"pools": [{"name": "p", "models": []}]}, "at least 1 item"),
    ],
)
def test_bad_pool_settings_are_refused_with_the_reason(
    values: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env_file=None, **{"pools": POOLS, **values})


def test_arena_quota_and_config_list_a_pool_agents_models() -> None:
    env = {
        "POOLS": json.dumps(POOLS),
        "AGENTS": "qwen=pool:default",
        "MODELSCOPE_API_KEY": "ms-test-key-000000",
    }
    quota = arena("quota", "--json", env=env)
    assert quota.exit_code == 0, quota.stderr
    models = [
        (m["provider"], m["model"], m["primary_for"]) for m in json.loads(quota.stdout)["models"]
    ]
    assert models[:2] == [("modelscope", "Qwen/Strong-A", 1), ("modelscope", "Qwen/Strong-B", 0)]
    assert ("modelscope", "Qwen/Off", 0) not in models
    config = arena("config", "--json", env=env)
    assert config.exit_code == 0, config.stderr
    assert "pool default: needs DEEPSEEK_API_KEY: not set" in config.stdout
