"""The renderer: what it draws, where, and that the same spec always gives the same bytes."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.charts.png import read_indexed_png, read_png_info
from app.charts.raster import font_directory
from app.charts.render import (
    PALETTE,
    ChartRenderer,
    ChartTooLargeError,
    draw_spec,
    price_range,
    price_ticks,
    render_market_charts,
    time_ticks,
)
from app.charts.spec import ChartSpec, Panel, PositionMarks, plan_market_charts
from tests.charts.golden import AT, golden_market, golden_positions

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def specs() -> tuple[ChartSpec, ...]:
    snapshot = golden_market().snapshot_at(AT)
    return plan_market_charts(snapshot, golden_positions(snapshot))


def colours_in(indices: np.ndarray) -> set[str]:
    names = ["white", "ink", "faint", "grid", "frame", "up", "down", "up_volume", "down_volume"]
    names += ["ema20", "ema50", "entry", "stop", "target"]
    present = set(np.unique(indices).tolist())
    return {name for name in names if PALETTE[name] in present}


def test_the_png_is_the_spec_size_and_a_4_bit_palette(specs: tuple[ChartSpec, ...]) -> None:
    image = ChartRenderer().render(specs[0])
    info = read_png_info(image.png)
    assert (info.width_px, info.height_px) == (specs[0].width_px, specs[0].height_px)
    assert (info.bit_depth, info.color_type) == (4, 3)
    assert image.sha256 == hashlib.sha256(image.png).hexdigest()
    assert image.spec_key == specs[0].key
    assert image.caption == specs[0].caption
    assert image.data_url().startswith("data:image/png;base64,iVBORw0KGgo")


def test_positions_are_drawn_only_where_there_are_some(specs: tuple[ChartSpec, ...]) -> None:
    intraday, _, context, _ = specs
    assert {"entry", "stop", "target", "up", "down", "ema20", "ema50", "up_volume"} <= (
        colours_in(draw_spec(intraday))
    )
    plain = colours_in(draw_spec(context))
    assert {"up", "down", "ema20", "ema50", "up_volume", "down_volume"} <= plain
    assert not {"entry", "stop", "target"} & plain


def test_a_level_in_view_is_a_dashed_line_across_the_panel(specs: tuple[ChartSpec, ...]) -> None:
    """BTC (top-left panel) has its stop in view: a row of stop-coloured dashes spans it."""
    pixels = draw_spec(specs[0])
    top_left = pixels[42:300, 0:448]
    rows = np.flatnonzero((top_left == PALETTE["stop"]).sum(axis=1) > 200)
    assert rows.size >= 2, "the stop line should be two pixels thick and mostly drawn"
    # The SOL panel (middle-left) names its far target at the edge instead of drawing it.
    middle_left = pixels[300:550, 0:448]
    assert (middle_left == PALETTE["target"]).sum(axis=1).max() < 100


def test_the_same_spec_gives_the_same_bytes_and_a_cache_hit(specs: tuple[ChartSpec, ...]) -> None:
    renderer = ChartRenderer()
    first = renderer.render(specs[0])
    assert renderer.render(specs[0]) is first
    assert ChartRenderer().render(specs[0]).png == first.png
    # A change of one price changes the picture and the key.
    panel = specs[0].panels[3]
    values = panel.values.copy()
    values[-1, 3] *= 1.01
    changed = dataclasses.replace(
        specs[0],
        panels=(
            *specs[0].panels[:3],
            dataclasses.replace(panel, values=values),
            *specs[0].panels[4:],
        ),
    )
    assert changed.key != specs[0].key
    assert renderer.render(changed).png != first.png


@pytest.mark.slow
def test_the_bytes_are_the_same_in_another_process(specs: tuple[ChartSpec, ...]) -> None:
    script = (
        "import hashlib\n"
        "from tests.charts.golden import golden_images\n"
        "print(' '.join(hashlib.sha256(i.png).hexdigest() for i in golden_images()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    here = ChartRenderer().render_all(specs)
    assert result.stdout.split() == [image.sha256 for image in here]


def test_a_chart_over_the_byte_limit_is_refused_with_the_setting_named(
    specs: tuple[ChartSpec, ...],
) -> None:
    with pytest.raises(ChartTooLargeError, match="VISION_MAX_IMAGE_BYTES"):
        ChartRenderer().render(specs[0], max_bytes=1000)


def test_render_market_charts_draws_the_plan(specs: tuple[ChartSpec, ...]) -> None:
    snapshot = golden_market().snapshot_at(AT)
    images = render_market_charts(snapshot, golden_positions(snapshot))
    assert [image.spec_key for image in images] == [spec.key for spec in specs]


def test_a_doji_still_has_a_body_and_a_flat_market_still_draws() -> None:
    values = np.tile([100.0, 100.0, 100.0, 100.0, 5.0, np.nan, np.nan], (3, 1))
    panel = Panel(
        coin="FLAT",
        timeframe="3m",
        open_ns=np.array([0, 180, 360], dtype=np.int64) * 1_000_000_000,
        values=values,
    )
    low, high = price_range(panel)
    assert low < 100.0 < high
    spec = ChartSpec(
        kind="intraday", panels=(panel,), rows=1, columns=1, width_px=448, height_px=320
    )
    pixels = draw_spec(spec)
    assert np.count_nonzero(pixels == PALETTE["up"]) >= 3 * 5  # three bodies, 5+ pixels each


def test_price_ticks_are_round_and_inside_the_range() -> None:
    assert price_ticks(96_012.0, 97_488.0) == [96_250.0, 96_500.0, 96_750.0, 97_000.0, 97_250.0]
    assert price_ticks(0.19012, 0.19488) == [0.191, 0.192, 0.193, 0.194]
    assert price_ticks(2.4501, 2.4999) == [2.46, 2.47, 2.48, 2.49]
    assert price_ticks(5.0, 5.0) == []
    for low, high in ((1e-6, 3e-6), (12_345.0, 98_765.0), (0.1, 0.7)):
        ticks = price_ticks(low, high)
        assert 2 <= len(ticks) <= 6 and all(low <= t <= high for t in ticks)


def test_time_ticks_fall_on_round_times() -> None:
    start = 1_761_634_800  # 2025-10-28 07:00 UTC
    three_minutes = np.array([start + 180 * i for i in range(60)], dtype=np.int64) * 10**9
    indices, labels = time_ticks(three_minutes, "3m")
    assert labels == ["07:00", "07:30", "08:00", "08:30", "09:00", "09:30"]
    assert indices == [0, 10, 20, 30, 40, 50]
    four_hours = np.array([start - 3600 * 7 + 14_400 * i for i in range(60)], dtype=np.int64)
    _, day_labels = time_ticks(four_hours * 10**9, "4h")
    assert day_labels == ["10-29", "10-31", "11-02", "11-04", "11-06"]


def test_text_uses_the_font_file_shipped_with_matplotlib() -> None:
    folder = font_directory()
    assert (folder / "DejaVuSans.ttf").is_file()
    assert "matplotlib" in folder.parts


def test_marks_off_both_edges_are_named_not_drawn() -> None:
    values = np.column_stack(
        [np.linspace(100, 101, 30)] * 4 + [np.ones(30), np.full(30, np.nan), np.full(30, np.nan)]
    )
    values[:, 1] += 0.2
    values[:, 2] -= 0.2
    marks = PositionMarks("long", 100.5, stop_loss=50.0, profit_target=200.0)
    panel = Panel("FAR", "3m", np.arange(30, dtype=np.int64) * 180 * 10**9, values, marks)
    spec = ChartSpec(
        kind="intraday", panels=(panel,), rows=1, columns=1, width_px=448, height_px=320
    )
    indices, _ = read_indexed_png(ChartRenderer().render(spec).png)
    # Both levels appear as text only: no row is mostly their colour.
    for name in ("stop", "target"):
        assert 0 < np.count_nonzero(indices == PALETTE[name]) < 2000
        assert (indices == PALETTE[name]).sum(axis=1).max() < 150
