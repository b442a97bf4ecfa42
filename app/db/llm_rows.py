"""How model calls become `llm_call` rows: compressed prompts and reasoning, one row per request."""

from __future__ import annotations

import functools
import hashlib
import json
import zlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from app.db.text_delta import Keyframe, KeyframeBook, expand_text
from app.domain import (
    REPLAYED_FAILURE,
    CallAttempt,
    ChatMessage,
    ChatResult,
    TokenUsage,
    prompt_hash,
)

# Every `llm_call` column a row may leave out, with its value: rows written together in one
# executemany must carry the same keys.
LLM_CALL_DEFAULTS: Final[dict[str, Any]] = {
    "cycle_id": None,
    "agent_id": None,
    "model": None,
    "prompt_version": None,
    "prompt_hash": None,
    "messages_z": None,
    "response_text": None,
    "reasoning_z": None,
    "finish_reason": None,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "reasoning_tokens": 0,
    "total_tokens": 0,
    "latency_ms": 0,
    "rate_limit_headers": None,
    "error": None,
    "cache_hit": False,
    "attempt": 1,
}


# The most of an answer (or its reasoning) a row keeps: 256 Ki characters, the most the decision
# parser reads. A longer answer is refused by the parser anyway; it is stored cut, with a note
# saying how much was left out (the note keeps it over the limit, so a replay refuses it too).
MAX_STORED_ANSWER_CHARS: Final = 262_144


def capped_text(text: str) -> str:
    """Return `text`, cut to `MAX_STORED_ANSWER_CHARS` with a note when it is longer."""
    if len(text) <= MAX_STORED_ANSWER_CHARS:
        return text
    left_out = len(text) - MAX_STORED_ANSWER_CHARS
    return (
        text[:MAX_STORED_ANSWER_CHARS]
        + f"\n…[cut when stored: {left_out:,} more characters of {len(text):,} not kept]"
    )


def compress_text(text: str | None) -> bytes | None:
    """Return `text` zlib-compressed, or None for an empty text (prompts are most of the bytes)."""
    if not text:
        return None
    return zlib.compress(text.encode("utf-8"), 6)


def decompress_text(blob: bytes | None) -> str:
    """Return the text stored by `compress_text`."""
    if not blob:
        return ""
    return zlib.decompress(blob).decode("utf-8")


# Shared texts shorter than this are not worth a reference.
_MIN_SHARED_CHARS: Final = 256


# The same system prompt and market section come back for every agent of a cycle.
@functools.lru_cache(maxsize=64)
def text_hash(text: str) -> str:
    """Return the sha256 of a text (the key of a `prompt_part`)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


Segment = str | dict[str, str]


@dataclass(frozen=True, slots=True)
class StoredPart:
    """A shared text as `prompt_part` keeps it: plain, or as segments over shorter parts.

    `blob` is its `text_z` when it is compressed against a keyframe (`app.db.text_delta`);
    None means `compress_text(payload)`.
    """

    encoding: Literal["text", "segments"]
    payload: str
    blob: bytes | None = None

    def stored_blob(self) -> bytes:
        """Return the `text_z` to write for this part."""
        if self.blob is not None:
            return self.blob
        compressed = compress_text(self.payload)
        return compressed if compressed is not None else zlib.compress(b"", 6)


# The keyframes stored texts are compressed against (one per kind of text, per process).
KEYFRAMES: Final = KeyframeBook()

# A cycle's market section is encoded once, not once per agent that saw it: its stored form,
# the shorter parts it refers to, and the keyframe its blob names (stored beside it).
_PART_MEMO: OrderedDict[str, tuple[StoredPart, dict[str, str], Keyframe | None]] = OrderedDict()
_PART_MEMO_SIZE: Final = 256


def _plain_part(frame: Keyframe) -> StoredPart:
    encoding: Literal["text", "segments"] = "segments" if frame.encoding == "segments" else "text"
    return StoredPart(encoding, frame.text)


def _add_bases(parts: dict[str, StoredPart], base: Keyframe | None) -> None:
    """Put the chain of parts a delta reads into `parts`: each as it was stored, while this
    process remembers it, else compressed alone (the same text either way)."""
    while base is not None and base.key not in parts:
        known = _PART_MEMO.get(base.key)
        if known is None:
            parts[base.key] = _plain_part(base)
            return
        parts[base.key] = known[0]
        base = known[2]


def _segments(
    text: str,
    references: Sequence[tuple[str, str]],
    found: dict[str, str],
    *,
    within_part: bool = False,
) -> list[Segment]:
    """Split `text` around the shared texts it contains.

    Inside a part only strictly shorter texts count (a part never refers to itself); a message
    may be one shared text whole (the system prompt).
    """
    segments: list[Segment] = [text]
    for shared, key in references:
        if len(shared) > len(text) or (within_part and len(shared) == len(text)):
            continue
        if not within_part and len(shared) == len(text) and shared == text:
            # The whole message is this text (the system prompt): no longer one came before.
            found[key] = shared
            return [{"part": key}]
        split: list[Segment] = []
        for segment in segments:
            # One search per occurrence (`in` then `split` searched each twice): the market
            # section is a long needle, and every agent's prompt holds it.
            at = segment.find(shared) if isinstance(segment, str) else -1
            if at < 0 or not isinstance(segment, str):
                split.append(segment)
                continue
            start = 0
            while at >= 0:
                if at > start:
                    split.append(segment[start:at])
                split.append({"part": key})
                start = at + len(shared)
                at = segment.find(shared, start)
            if start < len(segment):
                split.append(segment[start:])
            found[key] = shared
        segments = split
    return segments


def _stored_part(
    key: str, text: str, references: Sequence[tuple[str, str]]
) -> tuple[StoredPart, dict[str, str], Keyframe | None]:
    inner: dict[str, str] = {}
    segments = _segments(text, references, inner, within_part=True)
    encoding: Literal["text", "segments"] = "text"
    payload = text
    if len(segments) != 1 or not isinstance(segments[0], str):
        encoding = "segments"
        payload = json.dumps(segments, ensure_ascii=False, separators=(",", ":"))
    # Texts of a kind start alike (every market section opens with the same heading).
    blob, base = KEYFRAMES.encode(
        f"part:{encoding}:{payload[:48]}", payload, key, encoding=encoding, chain=True
    )
    if base is None or _chain_reaches(base, key):
        # A text met again after this process forgot it may follow a text that once followed
        # it: stored alone, it can never make a loop of deltas.
        return StoredPart(encoding, payload), inner, None
    return StoredPart(encoding, payload, blob), inner, base


def _chain_reaches(base: Keyframe, key: str) -> bool:
    """Return True when the chain `_add_bases` would store from `base` passes through `key`."""
    seen: set[str] = set()
    current: Keyframe | None = base
    while current is not None and current.key not in seen:
        if current.key == key:
            return True
        seen.add(current.key)
        known = _PART_MEMO.get(current.key)
        current = known[2] if known is not None else None
    return False


def forget_stored_texts() -> None:
    """Forget the keyframes and stored parts this process remembers (each test starts clean:
    what a delta is taken against must not depend on the tests that ran before)."""
    KEYFRAMES.clear()
    _PART_MEMO.clear()


def encode_messages(
    messages: Sequence[ChatMessage], shared: Sequence[str] = ()
) -> tuple[bytes | None, dict[str, StoredPart]]:
    """Return the stored form of a prompt and the shared texts it refers to (hash -> part).

    Each message's content becomes a list of segments: literal text, or `{"part": hash}` where a
    shared text stood. A shared text may itself contain shorter ones (a market section holds
    each coin's context block): it is then stored as segments too. `decode_messages` puts the
    exact prompt back together.
    """
    if not messages:
        return None, {}
    parts: dict[str, StoredPart] = {}
    references = sorted(
        {(text, text_hash(text)) for text in shared if len(text) >= _MIN_SHARED_CHARS},
        key=lambda item: len(item[0]),
        reverse=True,
    )
    found: dict[str, str] = {}
    encoded = [
        {"role": message.role, "content": _segments(message.content, references, found)}
        for message in messages
    ]
    pending = list(found.items())
    while pending:
        key, text = pending.pop()
        if key in parts:
            continue
        memo = _PART_MEMO.get(key)
        if memo is None:
            memo = _stored_part(key, text, references)
            _PART_MEMO[key] = memo
            if len(_PART_MEMO) > _PART_MEMO_SIZE:
                _PART_MEMO.popitem(last=False)
        part, inner, base = memo
        parts[key] = part
        _add_bases(parts, base)
        pending.extend(inner.items())
    payload = json.dumps(encoded, ensure_ascii=False, separators=(",", ":"))
    # A call's messages open with its system prompt's reference: the kind of its keyframe.
    blob, keyframe = KEYFRAMES.encode(f"messages:{payload[:100]}", payload, text_hash(payload))
    if keyframe is not None and keyframe.key not in parts:
        parts[keyframe.key] = _plain_part(keyframe)
    return blob, parts


def decode_segments(segments: Sequence[Segment], load_part: Callable[[str], str]) -> str:
    """Return the text of a segment list (references resolved through `load_part`)."""
    return "".join(
        segment if isinstance(segment, str) else load_part(segment["part"]) for segment in segments
    )


def decode_messages(
    blob: bytes | None,
    load_part: Callable[[str], str],
    load_payload: Callable[[str], str] | None = None,
) -> list[ChatMessage]:
    """Return the prompt stored by `encode_messages`; `load_part` returns a shared text by hash,
    `load_payload` a `prompt_part`'s stored payload (the keyframe of a delta blob)."""
    if not blob:
        return []
    payload = expand_text(blob, load_payload or _no_keyframe)
    return [
        ChatMessage(role=item["role"], content=decode_segments(item["content"], load_part))
        for item in json.loads(payload)
    ]


def _no_keyframe(key: str) -> str:
    raise ValueError(f"this prompt is stored against the keyframe {key}: pass load_payload")


def _usage_columns(usage: TokenUsage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "total_tokens": usage.total_tokens,
    }


def llm_call_values(
    *,
    messages: Sequence[ChatMessage],
    answer: ChatResult | None,
    attempts: Sequence[CallAttempt] = (),
    created_at: datetime,
    agent_id: int | None = None,
    cycle_id: int | None = None,
    prompt_version: str | None = None,
    parse_error: str | None = None,
    error: str | None = None,
    shared: Sequence[str] = (),
    parts: dict[str, StoredPart] | None = None,
    agent_model: tuple[str, str] | None = None,
    messages_hash: str | None = None,
) -> list[dict[str, Any]]:
    """Return the `llm_call` rows of one call: a row per failed request, then the answer's row.

    A failed request has `model_requested` set and no `model`; the answer's row has the chain's
    first model as `model_requested` and the model that answered as `model`, with the compressed
    prompt, the text and the compressed reasoning. When no answer came back, the last failed row
    keeps the prompt (and, with no request at all, one row records `error`), so every call stays
    auditable. A cache hit is one row with `cache_hit` set, and so is a replayed failure (outcome
    `replayed_failure`). A call held with no request sent has one row, `held_quota` or
    `held_not_served`, for the chain's first model; a call that reached no model at all has one
    row with outcome `error` for `agent_model` (provider, model) when given.

    The prompt is stored by `encode_messages`: texts in `shared` become references, collected
    into `parts` (hash -> text) for the caller to keep in `prompt_part`. `messages_hash` is
    `prompt_hash(messages)` when the caller already has it.
    """
    attempts = tuple(attempts) or (answer.attempts if answer is not None else ())
    stored, referenced = encode_messages(messages, shared)
    if parts is not None:
        parts.update(referenced)
    common: dict[str, Any] = {
        "cycle_id": cycle_id,
        "agent_id": agent_id,
        "prompt_version": prompt_version,
        "prompt_hash": (messages_hash or prompt_hash(messages)) if messages else None,
        "created_at": created_at,
    }
    rows: list[dict[str, Any]] = []
    for number, attempt in enumerate(attempts, start=1):
        if answer is not None and attempt.outcome == "ok" and attempt.model == answer.model:
            continue
        rows.append(
            {
                **common,
                "provider": attempt.provider,
                "model_requested": attempt.model,
                "model": None,
                "messages_z": None,
                "outcome": attempt.outcome,
                "error": attempt.error,
                "latency_ms": round(attempt.latency_s * 1000),
                "rate_limit_headers": dict(attempt.rate_limit_headers) or None,
                "attempt": number,
                "cache_hit": attempt.outcome == REPLAYED_FAILURE,
                **_usage_columns(attempt.usage),
            }
        )
    if answer is not None:
        outcome = "parse_error" if parse_error else ("cache_hit" if answer.cache_hit else "ok")
        rows.append(
            {
                **common,
                "provider": answer.provider,
                "model_requested": attempts[0].model if attempts else answer.model,
                "model": answer.model,
                "messages_z": stored,
                "response_text": capped_text(answer.text),
                "reasoning_z": compress_text(capped_text(answer.reasoning)),
                "finish_reason": answer.finish_reason,
                "latency_ms": round(answer.latency_s * 1000),
                "rate_limit_headers": dict(answer.rate_limit_headers) or None,
                "outcome": outcome,
                "error": parse_error,
                "cache_hit": answer.cache_hit,
                "attempt": len(attempts) or 1,
                **_usage_columns(answer.usage),
            }
        )
    elif rows:
        rows[-1]["messages_z"] = stored
    elif stored is not None:
        provider, model = agent_model or ("unknown", "unknown")
        rows.append(
            {
                **common,
                "provider": provider,
                "model_requested": model,
                "messages_z": stored,
                "outcome": "error",
                "error": error,
                "cache_hit": False,
            }
        )
    return rows
