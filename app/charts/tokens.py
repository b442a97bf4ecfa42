"""Estimate how many prompt tokens an image costs a Qwen-VL model.

Qwen-VL models resize an image so each side is a multiple of a patch factor, within a pixel
budget, and spend one token per factor x factor square (a 2 x 2 merge of vision patches), plus
two tokens that open and close the image. The factor is 32 for Qwen3-VL (16-pixel patches) and
28 for Qwen2.5-VL (14-pixel patches); the budgets are the open checkpoints' preprocessor
defaults. A hosted service may resize differently; these are estimates, and the response's
`usage.prompt_tokens` is the real count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class VisionTokenizer:
    """The resize rule of one model family."""

    factor_px: int
    min_pixels: int
    max_pixels: int
    extra_tokens: int = 2


QWEN3_VL: Final = VisionTokenizer(factor_px=32, min_pixels=65_536, max_pixels=16_777_216)
QWEN2_5_VL: Final = VisionTokenizer(factor_px=28, min_pixels=3_136, max_pixels=12_845_056)


def resized_size(
    width_px: int, height_px: int, model: VisionTokenizer = QWEN3_VL
) -> tuple[int, int]:
    """Return (width, height) after the model's resize (Qwen's `smart_resize`)."""
    factor = model.factor_px
    height = max(factor, round(height_px / factor) * factor)
    width = max(factor, round(width_px / factor) * factor)
    if height * width > model.max_pixels:
        beta = math.sqrt(height_px * width_px / model.max_pixels)
        height = max(factor, math.floor(height_px / beta / factor) * factor)
        width = max(factor, math.floor(width_px / beta / factor) * factor)
    elif height * width < model.min_pixels:
        beta = math.sqrt(model.min_pixels / (height_px * width_px))
        height = math.ceil(height_px * beta / factor) * factor
        width = math.ceil(width_px * beta / factor) * factor
    return width, height


def estimate_image_tokens(width_px: int, height_px: int, model: VisionTokenizer = QWEN3_VL) -> int:
    """Return the estimated prompt tokens of one image of this size."""
    width, height = resized_size(width_px, height_px, model)
    return (width // model.factor_px) * (height // model.factor_px) + model.extra_tokens
