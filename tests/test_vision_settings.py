"""The `[vision]` settings: chart size limits and extra vision models, from env and TOML."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import load_settings
from app.errors import ConfigError


def test_defaults_stay_far_below_the_providers_limits() -> None:
    vision = load_settings(env_file=None).vision
    assert (vision.max_image_width_px, vision.max_image_height_px) == (1024, 1024)
    # ModelScope takes images up to about 10 MB; four charts at the byte limit stay under it.
    assert vision.max_image_bytes * vision.max_images_per_request < 10_000_000
    assert vision.models == []


def test_vision_models_read_as_a_comma_list_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VISION_MODELS", "llava:13b, OpenGVLab/InternVL3-8B ,")
    monkeypatch.setenv("VISION_MAX_IMAGES_PER_REQUEST", "2")
    vision = load_settings(env_file=None).vision
    assert vision.models == ["llava:13b", "OpenGVLab/InternVL3-8B"]
    assert vision.max_images_per_request == 2


def test_vision_section_in_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "arena.toml"
    config.write_text(
        '[vision]\nmodels = ["llava:13b"]\nmax_image_width_px = 640\n', encoding="utf-8"
    )
    vision = load_settings(env_file=None, config_file=config).vision
    assert (vision.models, vision.max_image_width_px) == (["llava:13b"], 640)


def test_a_too_small_image_limit_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VISION_MAX_IMAGE_HEIGHT_PX", "100")
    with pytest.raises(ConfigError, match="VISION_MAX_IMAGE_HEIGHT_PX"):
        load_settings(env_file=None)
