"""Shared fixtures: the real data beside the project, temporary databases, a clean environment."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_root(setting: str | None) -> Path:
    """Return the real-data folder: `ARENA_SHARED_DATA` (the `shared` folder or its `data`
    folder, either works), else `../shared/data` beside the repository."""
    root = Path(setting) if setting else REPO_ROOT.parent / "shared" / "data"
    inner = root / "data"
    return inner if inner.is_dir() and not (root / "market").is_dir() else root


SHARED_DATA = shared_data_root(os.environ.get("ARENA_SHARED_DATA"))

# Settings the developer's shell or .env might carry; tests start from defaults.
_SETTING_PREFIXES = (
    "ARENA_",
    "SYMBOLS",
    "AGENTS",
    "EXCHANGE_",
    "RISK_",
    "SCHEDULE_",
    "LLM_",
    "VISION_",
    "MODELSCOPE_",
    "DEEPSEEK_",
    "DASHSCOPE_",
    "OPENAI_",
    "DATABASE_",
    "LOG_",
    "SERVE_",
)


def shared_data(*parts: str) -> Path:
    """Return a path under ../shared/data, skipping the test with the reason when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(
            f"real data not available: {path} is absent (set ARENA_SHARED_DATA to the shared "
            "data folder, see the README's Testing section)"
        )
    return path


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.upper().startswith(_SETTING_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    # Run from an empty folder so a developer's .env or arena.toml never leaks into a test.
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """Return the URL of a fresh SQLite file (not yet migrated)."""
    return f"sqlite:///{tmp_path / 'arena.db'}"
