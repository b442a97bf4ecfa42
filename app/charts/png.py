"""A small PNG encoder and reader: the chart bytes depend on numpy and zlib only.

Pillow's encoder writes different bytes from one release to the next (its zlib build changes),
and matplotlib's `savefig` adds a "Software" text chunk. Writing the few chunks ourselves keeps
a chart's bytes a function of its pixels: signature, IHDR, PLTE for palette images, one IDAT,
IEND; no text, time or gamma chunks.
"""

from __future__ import annotations

import lzma
import struct
import zlib
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
# Colour types of the IHDR chunk.
COLOR_RGB: Final = 2
COLOR_PALETTE: Final = 3
# On a chart (4-bit rows, no filter), level 8 finds the long repeats across rows that level 6
# misses: a fifth fewer bytes for about 25 ms; level 9 saves 1-2% more for twice the time.
ZLIB_LEVEL: Final = 8


@dataclass(frozen=True, slots=True)
class PngInfo:
    """What the IHDR chunk says about an image."""

    width_px: int
    height_px: int
    bit_depth: int
    color_type: int


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def _rows_with_filter_byte(rows: npt.NDArray[np.uint8]) -> bytes:
    # Filter type 0 (none) on every row: palette images compress best unfiltered.
    height = rows.shape[0]
    framed = np.zeros((height, rows.shape[1] + 1), dtype=np.uint8)
    framed[:, 1:] = rows
    return framed.tobytes()


def _pack_bits(indices: npt.NDArray[np.uint8], bit_depth: int) -> npt.NDArray[np.uint8]:
    if bit_depth == 8:
        return indices
    per_byte = 8 // bit_depth
    height, width = indices.shape
    padded_width = -(-width // per_byte) * per_byte
    if padded_width != width:
        padded = np.zeros((height, padded_width), dtype=np.uint8)
        padded[:, :width] = indices
        indices = padded
    packed = np.zeros((height, padded_width // per_byte), dtype=np.uint8)
    for slot in range(per_byte):
        # The leftmost pixel goes in the high bits.
        packed |= indices[:, slot::per_byte] << np.uint8(8 - bit_depth * (slot + 1))
    return packed


def _assemble(
    width: int, height: int, bit_depth: int, palette: bytes, rows: bytes, level: int
) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, COLOR_PALETTE, 0, 0, 0)
    return b"".join(
        (
            PNG_SIGNATURE,
            _chunk(b"IHDR", header),
            _chunk(b"PLTE", palette),
            _chunk(b"IDAT", zlib.compress(rows, level)),
            _chunk(b"IEND", b""),
        )
    )


def encode_indexed_png(
    indices: npt.NDArray[np.uint8], palette: npt.NDArray[np.uint8], *, level: int = ZLIB_LEVEL
) -> bytes:
    """Return a palette PNG: `indices` (height x width) into `palette` (n x 3 RGB, n <= 256).

    The bit depth is the smallest that holds the palette (1, 2, 4 or 8 bits per pixel).
    """
    if indices.ndim != 2 or indices.dtype != np.uint8:
        raise ValueError("indices must be a 2-D uint8 array")
    count = palette.shape[0]
    if not 1 <= count <= 256 or palette.shape[1:] != (3,):
        raise ValueError("the palette must hold 1 to 256 RGB colours")
    bit_depth = next(bits for bits in (1, 2, 4, 8) if count <= 1 << bits)
    height, width = indices.shape
    rows = _rows_with_filter_byte(_pack_bits(indices, bit_depth))
    return _assemble(width, height, bit_depth, palette.astype(np.uint8).tobytes(), rows, level)


def read_png_info(data: bytes) -> PngInfo:
    """Return the size and format of a PNG from its IHDR chunk; ValueError if it is not one."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG (no PNG signature)")
    length, kind = struct.unpack(">I4s", data[8:16])
    if kind != b"IHDR" or length != 13:
        raise ValueError("not a PNG (the first chunk is not IHDR)")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", data[16:26])
    if width == 0 or height == 0:
        raise ValueError("a PNG with no pixels")
    return PngInfo(width, height, bit_depth, color_type)


def read_indexed_png(data: bytes) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Return (indices, palette) of a palette PNG this module wrote.

    Only what `encode_indexed_png` writes is read (palette, filter 0, no interlace): enough for
    tests to compare images pixel by pixel, and to re-encode stored pixels, without another
    image library.
    """
    info = read_png_info(data)
    if info.color_type != COLOR_PALETTE:
        raise ValueError("only palette PNGs are read here")
    position = 8
    palette = b""
    compressed = bytearray()
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"PLTE":
            palette = body
        elif kind == b"IDAT":
            compressed += body
        position += 12 + length
    colors = np.frombuffer(palette, dtype=np.uint8).reshape(-1, 3)
    per_byte = 8 // info.bit_depth
    row_bytes = -(-info.width_px // per_byte)
    raw = np.frombuffer(zlib.decompress(bytes(compressed)), dtype=np.uint8)
    framed = raw.reshape(info.height_px, row_bytes + 1)
    if np.any(framed[:, 0] != 0):
        raise ValueError("only unfiltered rows are read here")
    packed = framed[:, 1:]
    if info.bit_depth == 8:
        indices = packed.copy()
    else:
        shifts = np.array(
            [8 - info.bit_depth * (slot + 1) for slot in range(per_byte)], dtype=np.uint8
        )
        mask = np.uint8((1 << info.bit_depth) - 1)
        expanded = (packed[:, :, None] >> shifts[None, None, :]) & mask
        indices = np.ascontiguousarray(expanded.reshape(info.height_px, -1)[:, : info.width_px])
    return indices, colors.copy()


def decode_png_pixels(data: bytes) -> npt.NDArray[np.uint8]:
    """Return the RGB pixels (height x width x 3) of a palette PNG this module wrote."""
    indices, palette = read_indexed_png(data)
    pixels: npt.NDArray[np.uint8] = palette[indices]
    return pixels


# -- a smaller lossless form for storage ---------------------------------------------------------

_COMPACT_MAGIC: Final = b"ACZ1"
# LZMA2 with no literal context: palette rows are runs and repeats, not text.
_COMPACT_FILTERS: Final = [{"id": lzma.FILTER_LZMA2, "preset": 6, "lc": 0, "lp": 0, "pb": 0}]


def _chunks(data: bytes) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        found[kind] = found.get(kind, b"") + data[position + 8 : position + 8 + length]
        position += 12 + length
    return found


def compact_png(data: bytes) -> bytes:
    """Return a PNG this module wrote in a form about a quarter smaller, for storage.

    The rows are kept with LZMA instead of zlib; `expand_png` rebuilds the identical PNG bytes
    (same sha256), which this checks before returning. ValueError for any other PNG (store
    those as they are).
    """
    info = read_png_info(data)
    chunks = _chunks(data)
    if info.color_type != COLOR_PALETTE or b"PLTE" not in chunks or b"IDAT" not in chunks:
        raise ValueError("only palette PNGs written by encode_indexed_png can be compacted")
    rows = zlib.decompress(chunks[b"IDAT"])
    palette = chunks[b"PLTE"]
    header = struct.pack(">IIBH", info.width_px, info.height_px, info.bit_depth, len(palette) // 3)
    packed = lzma.compress(rows, format=lzma.FORMAT_RAW, filters=_COMPACT_FILTERS)
    blob = _COMPACT_MAGIC + header + palette + packed
    if expand_png(blob) != data:
        raise ValueError("this PNG was not written by encode_indexed_png; store it as it is")
    return blob


def expand_png(blob: bytes) -> bytes:
    """Return the PNG bytes `compact_png` was given."""
    if not blob.startswith(_COMPACT_MAGIC):
        raise ValueError("not a compacted chart")
    position = len(_COMPACT_MAGIC)
    width, height, bit_depth, colors = struct.unpack(">IIBH", blob[position : position + 11])
    position += 11
    palette = blob[position : position + 3 * colors]
    rows = lzma.decompress(
        blob[position + 3 * colors :], format=lzma.FORMAT_RAW, filters=_COMPACT_FILTERS
    )
    return _assemble(width, height, bit_depth, palette, rows, ZLIB_LEVEL)
