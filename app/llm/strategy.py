"""`LLMStrategy`: an agent whose brain is a model behind the built prompt.

It sends the engine's messages to its chat model (a `FallbackChain`: cache, quota skips, fallback
models), then reads the answer with `app.decisions.parse_decisions_report`. Entries that cannot be
read while others can are passed on as problems (stored as rejected decisions). An answer that
cannot be read at all is not an exception: the strategy returns no decisions and the reason, and
the engine records both. A call that got no answer raises a `ModelCallError` subclass carrying
every request.
"""

from __future__ import annotations

from app.decisions import parse_decisions_report
from app.errors import DecisionError, InvariantError, ReplayMissError
from app.ports import ChatModel, ChatOptions, DecisionRequest, StrategyAnswer

# The prompt asks for JSON; providers that can enforce it (DeepSeek) are told to.
DEFAULT_OPTIONS = ChatOptions(json_mode=True)


class LLMStrategy:
    """The `Strategy` port over a chat model: prompt in, parsed trade decisions out."""

    uses_prompt = True

    def __init__(self, name: str, chat_model: ChatModel, *, options: ChatOptions | None = None):
        self.name = name
        self.chat_model = chat_model
        self.options = options or DEFAULT_OPTIONS

    def __repr__(self) -> str:
        return f"LLMStrategy(name={self.name!r}, chat_model={self.chat_model!r})"

    async def decide(self, request: DecisionRequest) -> StrategyAnswer:
        """Ask the model with `request.messages` and parse its decisions for `request.coins`."""
        if not request.messages:
            raise InvariantError(f"agent {self.name}: an LLM strategy needs the prompt messages")
        try:
            result = await self.chat_model.complete(request.messages, self.options)
        except ReplayMissError as error:
            at = request.at.isoformat()
            raise ReplayMissError(f"{error} (cycle at {at})", attempts=error.attempts) from error
        try:
            report = parse_decisions_report(result.text, request.coins)
        except DecisionError as error:
            return StrategyAnswer(
                decisions=(), chat=result, parse_error=str(error), attempts=result.attempts
            )
        if report.problems and not report.decisions:
            reason = "no valid decision in the answer: " + "; ".join(
                problem.describe() for problem in report.problems[:6]
            )
            return StrategyAnswer(
                decisions=(),
                chat=result,
                parse_error=reason,
                attempts=result.attempts,
                problems=report.problems,
            )
        return StrategyAnswer(
            decisions=report.decisions,
            chat=result,
            attempts=result.attempts,
            problems=report.problems,
        )
