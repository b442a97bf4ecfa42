"""Complexity routing: score a request 1-10 and pick the pool tier it starts on.

The score-to-tier map: 1-3 -> tier 4 (lightest), 4-5 -> tier 3, 6-7 -> tier 2, 8-10 -> tier 1
(strongest). Two scorers: `HeuristicScorer`, deterministic and free (length, reasoning words,
code, turns), and `LlmScorer`, which asks a configured model (a small local one, typically) for
the number. `pick_tier` never fails: a scorer error gives the default tier.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from app.domain import ChatMessage, ChatOptions
from app.ports import ChatModel

log = logging.getLogger(__name__)

MIN_SCORE: Final = 1
MAX_SCORE: Final = 10
# (highest score, tier) in ascending score order.
SCORE_TIERS: Final[tuple[tuple[int, int], ...]] = ((3, 4), (5, 3), (7, 2), (10, 1))
# Characters of prompt text at which the heuristic adds a point each.
LENGTH_STEPS: Final = (200, 1_000, 4_000, 12_000)
REASONING_WORDS: Final = (
    "prove",
    "proof",
    "derive",
    "analy",
    "step by step",
    "optimi",
    "algorithm",
    "architecture",
    "debug",
    "refactor",
    "trade-off",
    "证明",
    "分析",
    "推理",
)
MANY_TURNS: Final = 6
SCORER_PROMPT: Final = (
    "Rate how hard the following request is for a language model on a scale of 1 (trivial "
    "lookup or small talk) to 10 (long multi-step reasoning, proofs, complex code). Answer with "
    "the number only.\n\nRequest:\n"
)
_NUMBER = re.compile(r"\b(10|[1-9])\b")


class ComplexityScorer(Protocol):
    """Scores a request's complexity from 1 (trivial) to 10 (hardest)."""

    async def score(self, messages: Sequence[ChatMessage]) -> int:
        """Return the request's complexity, 1-10."""
        ...


def tier_for_score(score: int) -> int:
    """Return the pool tier a request of complexity `score` (1-10) starts on."""
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise ValueError(f"a complexity score is {MIN_SCORE}-{MAX_SCORE}, not {score}")
    return next(tier for highest, tier in SCORE_TIERS if score <= highest)


class HeuristicScorer:
    """Score by prompt length, reasoning words, code and turns: free and deterministic.

    1 + one point per length step passed (200, 1,000, 4,000, 12,000 characters) + one per
    distinct reasoning word (at most 3) + one for a code block + one for more than 6 messages,
    capped at 10.
    """

    async def score(self, messages: Sequence[ChatMessage]) -> int:
        """Return the heuristic score of `messages`."""
        return heuristic_score(messages)


def heuristic_score(messages: Sequence[ChatMessage]) -> int:
    """Return the deterministic complexity score of `messages` (see `HeuristicScorer`)."""
    text = "\n".join(message.content for message in messages)
    lowered = text.lower()
    points = sum(1 for step in LENGTH_STEPS if len(text) >= step)
    points += min(3, sum(1 for word in REASONING_WORDS if word in lowered))
    points += 1 if "```" in text else 0
    points += 1 if len(messages) > MANY_TURNS else 0
    return max(MIN_SCORE, min(MAX_SCORE, MIN_SCORE + points))


@dataclass(slots=True)
class LlmScorer:
    """Ask a model (any configured OpenAI-compatible one) for the score."""

    model: ChatModel
    timeout_s: float = 10.0
    # Only the end of a long prompt is shown: the request is usually last.
    max_prompt_chars: int = 4_000

    async def score(self, messages: Sequence[ChatMessage]) -> int:
        """Return the model's score; raise `ValueError` when its answer holds no 1-10 number."""
        text = "\n".join(f"{m.role}: {m.content}" for m in messages if m.role != "system")
        prompt = SCORER_PROMPT + text[-self.max_prompt_chars :]
        options = ChatOptions(
            temperature=0.0, max_tokens=8, budget_s=self.timeout_s, timeout_s=self.timeout_s
        )
        result = await self.model.complete([ChatMessage("user", prompt)], options)
        found = _NUMBER.search(result.text)
        if found is None:
            raise ValueError(f"the scorer answered {result.text[:40]!r}, not a number 1-10")
        return int(found.group(1))


@dataclass(frozen=True, slots=True)
class TierChoice:
    """The tier a request starts on and how it was decided."""

    tier: int
    score: int | None
    error: str | None = None


async def pick_tier(
    scorer: ComplexityScorer, messages: Sequence[ChatMessage], *, default_tier: int
) -> TierChoice:
    """Return the tier for `messages`; any scorer failure gives `default_tier`."""
    try:
        score = await scorer.score(messages)
        return TierChoice(tier=tier_for_score(score), score=score)
    except Exception as error:  # a scorer is optional help: it must never fail the request
        log.warning("complexity scorer failed (%s); using tier %d", error, default_tier)
        return TierChoice(tier=default_tier, score=None, error=str(error))
