"""Scripted strategies: agents whose answers a test decides, through the real `Strategy` port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from app.decisions import DecisionProblem, TradeDecision
from app.domain import ChatResult
from app.ports import DecisionRequest, StrategyAnswer

Script = Callable[[DecisionRequest], list[TradeDecision]]


class ScriptedStrategy:
    """A strategy that answers from a script (or never, or unreadably) and keeps requests.

    `never_answers` waits until cancelled: a test of a timeout then depends on the cut alone,
    never on a real delay racing it."""

    uses_prompt = True

    def __init__(
        self,
        name: str,
        script: Script | None = None,
        *,
        never_answers: bool = False,
        parse_error: str | None = None,
        problems: tuple[DecisionProblem, ...] = (),
    ) -> None:
        self.name = name
        self.problems = problems
        self.script = script or (lambda request: [])
        self.never_answers = never_answers
        self.parse_error = parse_error
        self.requests: list[DecisionRequest] = []

    async def decide(self, request: DecisionRequest) -> StrategyAnswer:
        self.requests.append(request)
        if self.never_answers:
            await asyncio.Event().wait()
        decisions = tuple(self.script(request))
        text = json.dumps({d.coin: d.model_dump() for d in decisions})
        chat = ChatResult(text=text, provider="fake", model="fake-1", finish_reason="stop")
        if self.parse_error is not None:
            return StrategyAnswer(decisions=(), chat=chat, parse_error=self.parse_error)
        return StrategyAnswer(decisions=decisions, chat=chat, problems=self.problems)
