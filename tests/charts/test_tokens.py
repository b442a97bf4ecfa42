"""Image token estimates follow Qwen-VL's resize rule (multiples of the patch square)."""

from __future__ import annotations

from app.charts.tokens import QWEN2_5_VL, QWEN3_VL, estimate_image_tokens, resized_size


def test_a_size_already_in_32_pixel_squares_is_kept() -> None:
    """896 x 800 is 28 x 25 squares of 32 pixels: 700 tokens, plus the two that frame it."""
    assert resized_size(896, 800) == (896, 800)
    assert estimate_image_tokens(896, 800) == 702
    assert estimate_image_tokens(448, 320) == 14 * 10 + 2


def test_other_sizes_round_to_the_nearest_square() -> None:
    """1000 x 500 becomes 992 x 512 (31 x 16 squares) for Qwen3-VL, 1008 x 504 for Qwen2.5-VL."""
    assert resized_size(1000, 500) == (992, 512)
    assert estimate_image_tokens(1000, 500) == 31 * 16 + 2
    assert resized_size(1000, 500, QWEN2_5_VL) == (1008, 504)
    assert estimate_image_tokens(1000, 500, QWEN2_5_VL) == 36 * 18 + 2


def test_tiny_images_are_scaled_up_to_the_minimum_and_huge_ones_down() -> None:
    """Qwen3-VL's minimum is 65,536 pixels (64 squares); its maximum 16,777,216 (16,384)."""
    width, height = resized_size(100, 100)
    assert width * height >= QWEN3_VL.min_pixels and width % 32 == 0
    assert estimate_image_tokens(100, 100) == (width // 32) * (height // 32) + 2
    width, height = resized_size(10_000, 10_000)
    assert width * height <= QWEN3_VL.max_pixels
    assert estimate_image_tokens(10_000, 10_000) <= 16_384 + 2
