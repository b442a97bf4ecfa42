"""How many model calls an evaluation needs, how many are answered already, and how long the rest
takes at the quota left today.

Every cycle asks every model agent once (a refused or failed answer may ask a fallback model too,
so the figure is a floor). The answer cache cannot say in advance which prompts it holds (a
prompt depends on the account, so on earlier answers); the stored answers of a model bound the
hits from above, and the calls to make from below are `needed - stored`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from app.config import AgentConfig
from app.evaluation.windows import Window
from app.providers import BASELINE


@dataclass(frozen=True, slots=True)
class ModelBudget:
    """One model's share of the plan: calls needed, answers stored, and calls left today."""

    provider: str
    model: str
    agents: tuple[str, ...]
    calls_needed: int
    answers_stored: int
    calls_left_today: int | None

    @property
    def calls_to_make(self) -> int:
        """Return the calls the cache cannot answer, at least (needed minus stored)."""
        return max(self.calls_needed - self.answers_stored, 0)

    @property
    def days_at_quota(self) -> float | None:
        """Return how many quota days the calls take at today's remainder (None: unknown)."""
        if self.calls_left_today is None:
            return None
        if self.calls_to_make == 0:
            return 0.0
        if self.calls_left_today <= 0:
            return math.inf
        return self.calls_to_make / self.calls_left_today

    @property
    def exceeds_today(self) -> bool:
        """Return True when the calls to make are more than the quota left today."""
        return self.calls_left_today is not None and self.calls_to_make > self.calls_left_today

    def describe(self) -> str:
        """Return one line, e.g. '48,960 calls; 1,840 left today on modelscope: about 27 days'."""
        head = (
            f"{self.provider}:{self.model} ({', '.join(self.agents)}): "
            f"{self.calls_needed:,} calls, {min(self.answers_stored, self.calls_needed):,} "
            "may be cached"
        )
        if self.calls_left_today is None:
            return f"{head}; quota left today unknown (arena quota --probe reads it)"
        days = self.days_at_quota
        if days == 0:
            return f"{head}; {self.calls_left_today:,} left today on {self.provider}: no wait"
        span = "never (none left)" if days is None or math.isinf(days) else _days(days)
        return f"{head}; {self.calls_left_today:,} left today on {self.provider}: {span}"


def _days(days: float) -> str:
    if days <= 1:
        return "within today's quota"
    return f"about {math.ceil(days):,} days"


def call_budget(
    agents: Sequence[AgentConfig],
    windows: Sequence[Window],
    *,
    step_cycles: Callable[[Window], int],
    stored: Callable[[str, str], int],
    calls_left: Mapping[tuple[str, str], int | None],
) -> list[ModelBudget]:
    """Return each primary model's budget for running `windows` (the ones still to run)."""
    cycles = sum(step_cycles(window) for window in windows)
    by_model: dict[tuple[str, str], list[str]] = {}
    for agent in agents:
        if agent.provider == BASELINE:
            continue
        by_model.setdefault((agent.provider, agent.model), []).append(agent.name)
    return [
        ModelBudget(
            provider=provider,
            model=model,
            agents=tuple(names),
            calls_needed=cycles * len(names),
            answers_stored=stored(provider, model),
            calls_left_today=calls_left.get((provider, model)),
        )
        for (provider, model), names in by_model.items()
    ]
