"""Stored prompt texts compressed against an earlier one of their kind (a keyframe).

Two cycles' prompts differ in a few numbers: each series of ten values slides by one, the
account line changes, the template text stays. Compressed alone (zlib) a market section keeps
about 2.2 kB of its 6.4 kB; compressed with a recent market section as zlib's preset dictionary
it keeps about 1 kB, and a call's messages about 0.3 kB instead of 1.2 kB.

A delta blob names its base by hash: a `prompt_part` row. A call's messages name a keyframe
compressed on its own (one more row to read); a shared part (a market section) names the
previous part of its kind, a chain at most `KEYFRAME_EVERY` long that ends at a part
compressed on its own. The keyframe is replaced every `KEYFRAME_EVERY` texts of its kind, or
sooner when a delta stops paying, so a delta never refers to a text much older than itself.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

# A zlib stream starts with its CMF byte (0x78 for deflate with a 32 kB window), never 0x00:
# this prefix tells a delta from a plain `compress_text` blob.
DELTA_MAGIC: Final = b"\x00TD1"
_HASH_CHARS: Final = 64
# zlib uses at most the last 32 kB of a preset dictionary.
_MAX_DICT_BYTES: Final = 32_768
# Texts shorter than this are compressed alone: the 68-byte reference would eat the gain.
MIN_DELTA_CHARS: Final = 1_024
# A new keyframe every this many texts of a kind (a market section a cycle: every 16 cycles).
KEYFRAME_EVERY: Final = 16
# A delta larger than this share of the text compressed alone makes the text a keyframe.
_WORTH_RATIO: Final = 0.6
# Level 6 as for texts alone: level 9 saved 3-4% on market sections for a fifth more time.
_LEVEL: Final = 6
# Kinds of text remembered at once (the market section, each agent's messages...).
_KINDS: Final = 64


def is_delta(blob: bytes | None) -> bool:
    """Return True when `blob` was written by `compress_against`."""
    return blob is not None and blob.startswith(DELTA_MAGIC)


def delta_base(blob: bytes) -> str:
    """Return the hash of the keyframe a delta blob was compressed against."""
    start = len(DELTA_MAGIC)
    return blob[start : start + _HASH_CHARS].decode("ascii")


def compress_against(text: str, base_hash: str, base_text: str) -> bytes:
    """Return `text` compressed with `base_text` (the keyframe `base_hash`) as dictionary."""
    if len(base_hash) != _HASH_CHARS:
        raise ValueError("a keyframe is named by its 64-character sha256")
    compressor = zlib.compressobj(_LEVEL, zdict=_dictionary(base_text))
    body = compressor.compress(text.encode("utf-8")) + compressor.flush()
    return DELTA_MAGIC + base_hash.encode("ascii") + body


def decompress_against(blob: bytes, base_text: str) -> str:
    """Return the text of a delta blob, given its keyframe's text."""
    body = blob[len(DELTA_MAGIC) + _HASH_CHARS :]
    decompressor = zlib.decompressobj(zdict=_dictionary(base_text))
    return (decompressor.decompress(body) + decompressor.flush()).decode("utf-8")


def expand_text(blob: bytes | None, load_base: Callable[[str], str]) -> str:
    """Return the text of a stored blob: plain zlib, or a delta (`load_base(hash)` gives the
    keyframe's text)."""
    if not blob:
        return ""
    if is_delta(blob):
        return decompress_against(blob, load_base(delta_base(blob)))
    return zlib.decompress(blob).decode("utf-8")


def _alone(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"), 6)


def _dictionary(base_text: str) -> bytes:
    return base_text.encode("utf-8")[-_MAX_DICT_BYTES:]


@dataclass(slots=True)
class Keyframe:
    """The text a kind's deltas are compressed against, and how many used it."""

    key: str
    text: str
    # How `prompt_part` keeps it: "text", or "segments" for a part over shorter parts.
    encoding: str = "text"
    uses: int = 0
    # The keyframe compressed alone: what a delta must beat by far to be worth it.
    alone_bytes: int = 0
    # A compressor already primed with this keyframe as dictionary, copied for each delta:
    # loading the dictionary cost a third of a delta's time (`compress_against` writes the same
    # bytes). Made on first use.
    primed: zlib._Compress | None = field(default=None, compare=False, repr=False)

    def delta(self, text: str) -> bytes:
        """Return `compress_against(text, self.key, self.text)`."""
        if self.primed is None:
            if len(self.key) != _HASH_CHARS:
                raise ValueError("a keyframe is named by its 64-character sha256")
            self.primed = zlib.compressobj(_LEVEL, zdict=_dictionary(self.text))
        compressor = self.primed.copy()
        body = compressor.compress(text.encode("utf-8")) + compressor.flush()
        return DELTA_MAGIC + self.key.encode("ascii") + body


class KeyframeBook:
    """The current keyframe of each kind of text (thread-safe: rows are built on any thread).

    `encode` returns the blob to store and, when it is a delta, the text it names: the caller
    stores that text in `prompt_part` beside it, in the same transaction, so a delta never
    names a row its database lacks.

    With `chain`, a text is compressed against the previous text of its kind (itself perhaps a
    delta), at most `every` deep: about half the bytes of a delta against the keyframe, for a
    read of up to `every` rows. Only texts kept in `prompt_part` can be chained (a call's
    messages are not: they name a keyframe).
    """

    def __init__(self, *, every: int = KEYFRAME_EVERY) -> None:
        self._every = every
        self._frames: OrderedDict[str, Keyframe] = OrderedDict()
        self._lock = threading.Lock()

    def encode(
        self, kind: str, text: str, key: str, *, encoding: str = "text", chain: bool = False
    ) -> tuple[bytes, Keyframe | None]:
        """Return (blob, base or None) for `text` (kept under `key`, as `encoding`) of `kind`.

        The first text of a kind, every `every`th, and one a delta would not shrink enough
        become the kind's keyframe: compressed alone (None returned).
        """
        if len(text) < MIN_DELTA_CHARS:
            return _alone(text), None
        with self._lock:
            frame = self._frames.get(kind)
            if frame is not None and frame.key == key:
                return _alone(text), None
            if frame is not None and frame.uses < self._every:
                blob = frame.delta(text)
                # Against the keyframe's own size alone: texts of a kind are about as long,
                # and the text need not be compressed twice.
                if len(blob) <= _WORTH_RATIO * frame.alone_bytes:
                    base = Keyframe(frame.key, frame.text, frame.encoding, frame.uses)
                    if chain:
                        self._frames[kind] = Keyframe(
                            key, text, encoding, frame.uses + 1, frame.alone_bytes
                        )
                    else:
                        # The same keyframe, one more use (its primed compressor kept).
                        frame.uses += 1
                    self._frames.move_to_end(kind)
                    return blob, base
            alone = _alone(text)
            self._frames[kind] = Keyframe(key, text, encoding, 0, len(alone))
            self._frames.move_to_end(kind)
            if len(self._frames) > _KINDS:
                self._frames.popitem(last=False)
        return alone, None

    def clear(self) -> None:
        """Forget every keyframe (tests start from a clean slate)."""
        with self._lock:
            self._frames.clear()
