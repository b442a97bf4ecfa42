"""The response cache's key: a hash of what was asked (provider, model, prompt, parameters).

Modes: `live` always calls and stores the answer, `cached` uses a stored answer when there is one
(and calls and stores otherwise), `replay` never calls (a miss is an error naming the prompt).
A call that got no answer leaves a failure marker (`RecordedFailure`): `replay` fails the same
way, `cached` asks again and replaces it with the answer. Where answers are kept is the
`AnswerCache` port (`app.db.answer_cache`, the `llm_cache` table). A replay of one recorded run
(`--replay-run`) reads that run's own calls instead (`RecordedAnswers`), by agent and prompt hash.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from app.domain import image_keys, pairs_hash
from app.llm.openai_compat import PreparedRequest

_ROLE_AND_CONTENT: Final = frozenset({"role", "content"})


def cache_key(provider: str, request: PreparedRequest) -> str:
    """Return the sha256 of the canonical JSON of (provider, model, prompt hash, parameters).

    The prompt enters by its `prompt_hash` (of the messages exactly as sent), which the call's
    record stores too: the long prompt is serialised once, not once per model and record. A
    vision agent's chart images enter by their keys and captions.
    """
    if any(message.keys() != _ROLE_AND_CONTENT for message in request.messages):
        raise ValueError("a cached request's messages have exactly a role and a content")
    pairs = tuple((message["role"], message["content"]) for message in request.messages)
    payload: dict[str, Any] = {
        "provider": provider,
        "model": request.model,
        "prompt_hash": pairs_hash(pairs),
        "parameters": request.answer_parameters(),
    }
    if request.images:
        # Each chart by its spec key (the same key always draws the same PNG bytes), so a
        # replay finds the answer without drawing; a text-only key is exactly as before.
        payload["images"] = [[index, *image_keys(images)] for index, images in request.images]
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
