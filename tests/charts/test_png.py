"""The PNG writer: valid files (Pillow reads them back), no metadata, exact round trips."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from app.charts.png import (
    COLOR_PALETTE,
    PNG_SIGNATURE,
    compact_png,
    decode_png_pixels,
    encode_indexed_png,
    expand_png,
    read_indexed_png,
    read_png_info,
)


def chunk_types(data: bytes) -> list[bytes]:
    kinds, position = [], 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kinds.append(data[position + 4 : position + 8])
        position += 12 + length
    return kinds


@pytest.mark.parametrize(("colors", "bits"), [(2, 1), (3, 2), (4, 2), (16, 4), (17, 8), (256, 8)])
@pytest.mark.parametrize("width", [1, 7, 33])
def test_round_trip_at_every_bit_depth(colors: int, bits: int, width: int) -> None:
    rng = np.random.default_rng(colors * 100 + width)
    indices = rng.integers(0, colors, size=(5, width), dtype=np.uint8)
    palette = rng.integers(0, 256, size=(colors, 3), dtype=np.uint8)
    data = encode_indexed_png(indices, palette)
    info = read_png_info(data)
    assert (info.width_px, info.height_px, info.bit_depth, info.color_type) == (
        width,
        5,
        bits,
        COLOR_PALETTE,
    )
    got_indices, got_palette = read_indexed_png(data)
    np.testing.assert_array_equal(got_indices, indices)
    np.testing.assert_array_equal(got_palette, palette)
    # An independent decoder agrees on every pixel.
    with Image.open(io.BytesIO(data)) as opened:
        np.testing.assert_array_equal(np.asarray(opened.convert("RGB")), palette[indices])
    np.testing.assert_array_equal(decode_png_pixels(data), palette[indices])


def test_only_the_four_essential_chunks_no_metadata() -> None:
    data = encode_indexed_png(np.zeros((3, 3), dtype=np.uint8), np.zeros((1, 3), dtype=np.uint8))
    assert data.startswith(PNG_SIGNATURE)
    assert chunk_types(data) == [b"IHDR", b"PLTE", b"IDAT", b"IEND"]


def test_chunk_crcs_are_right() -> None:
    data = encode_indexed_png(np.eye(4, dtype=np.uint8), np.array([[0, 0, 0], [9, 9, 9]], np.uint8))
    position = 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        body = data[position + 4 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(body) & 0xFFFFFFFF
        position += 12 + length


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"GIF89a" + b"\0" * 40, "no PNG signature"),
        (PNG_SIGNATURE + struct.pack(">I4s", 13, b"IDAT") + b"\0" * 30, "not IHDR"),
        (b"\x89PNG", "no PNG signature"),
    ],
)
def test_reading_something_else_fails_clearly(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        read_png_info(data)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="2-D uint8"):
        encode_indexed_png(np.zeros((2, 2), dtype=np.int32), np.zeros((1, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="1 to 256"):
        encode_indexed_png(np.zeros((2, 2), dtype=np.uint8), np.zeros((257, 3), dtype=np.uint8))


def test_compacted_charts_expand_to_the_identical_bytes() -> None:
    from tests.charts.golden import EXPECTED_DIR

    for path in sorted(EXPECTED_DIR.glob("*.png")):
        data = path.read_bytes()
        blob = compact_png(data)
        assert expand_png(blob) == data
        if len(data) > 10_000:
            assert len(blob) < 0.85 * len(data), f"{path.name}: {len(blob)} vs {len(data)}"


def test_only_our_own_pngs_are_compacted() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).convert("P").save(buffer, format="PNG")
    with pytest.raises(ValueError, match=r"store it as it is|only palette"):
        compact_png(buffer.getvalue())
    with pytest.raises(ValueError, match="not a compacted chart"):
        expand_png(b"\x89PNG....")
