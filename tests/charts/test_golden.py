"""The charts of a fixed market equal the checked-in PNGs, byte for byte.

Every change to what a vision agent sees shows up as a changed file in review. After a deliberate
change, regenerate the files, look at them, and bump CHART_VERSION:

    .venv/bin/python -m tests.charts.golden
    git diff --stat tests/charts/expected/

The comparison is exact: the renderer draws integer pixels with a fixed palette and writes the PNG
itself, so the bytes depend only on the spec, numpy, zlib and the FreeType inside Pillow (which
rasterises the text). A Pillow upgrade that changes FreeType's glyphs fails this test with the
number of differing pixels; regenerating is then the fix. The test never rewrites the files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.charts.png import read_indexed_png
from tests.charts.golden import EXPECTED_DIR, expected_name, golden_images

IMAGES = golden_images()
HOW_TO_UPDATE = "regenerate with `.venv/bin/python -m tests.charts.golden` and review the images"


def test_the_expected_files_are_exactly_the_golden_images() -> None:
    names = sorted(path.name for path in EXPECTED_DIR.glob("*.png"))
    assert names == sorted(expected_name(i, image) for i, image in enumerate(IMAGES, start=1)), (
        f"the set of charts changed; {HOW_TO_UPDATE}"
    )
    total = sum(path.stat().st_size for path in EXPECTED_DIR.glob("*.png"))
    assert total < 100_000, f"the expected charts take {total} bytes; keep them small"


@pytest.mark.parametrize("index", range(1, len(IMAGES) + 1))
def test_chart_matches_the_checked_in_png(index: int, tmp_path: Path) -> None:
    image = IMAGES[index - 1]
    expected_path = EXPECTED_DIR / expected_name(index, image)
    expected = expected_path.read_bytes()
    if image.png == expected:
        return
    actual_path = tmp_path / expected_path.name
    actual_path.write_bytes(image.png)
    got, _ = read_indexed_png(image.png)
    want, _ = read_indexed_png(expected)
    if got.shape != want.shape:
        detail = f"size {got.shape[::-1]} instead of {want.shape[::-1]}"
    else:
        detail = f"{int(np.count_nonzero(got != want))} of {got.size} pixels differ"
    pytest.fail(
        f"{expected_path.name}: the chart changed ({detail}); this run's image is {actual_path}; "
        f"{HOW_TO_UPDATE}"
    )


def test_golden_charts_cover_positions_split_grids_and_a_coin_without_candles() -> None:
    kinds = [(image.kind, image.coins) for image in IMAGES]
    six = ("BTC", "ETH", "SOL", "BNB", "XRP", "DOGE")
    assert kinds == [
        ("intraday", six),
        ("intraday", ("HYPE",)),
        ("context", six),
        ("context", ("HYPE",)),
    ]
    assert "open positions marked" in IMAGES[0].caption
    assert "open positions" not in IMAGES[2].caption
    assert "none closed yet" in IMAGES[3].caption
    assert (IMAGES[0].width_px, IMAGES[0].height_px) == (896, 800)
    assert (IMAGES[1].width_px, IMAGES[1].height_px) == (448, 320)
