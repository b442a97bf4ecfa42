"""`LLMStrategy`: an agent whose brain is a model behind the built prompt.

It sends the engine's messages to its chat model (a `FallbackChain`: cache, quota skips, fallback
models), then reads the answer with `app.decisions.parse_decisions_report`. Entries that cannot be
read while others can are passed on as problems (stored as rejected decisions). An answer that
cannot be read at all is not an exception: the strategy returns no decisions and the reason, and
the engine records both. A call that got no answer raises a `ModelCallError` subclass carrying
every request. A call the engine cancels raises nothing of ours: `attempts_made(request)` then
lists the requests it had made (the `ReportsAttempts` port). `request.budget_s` bounds the call.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from app.decisions import parse_decisions_report
from app.domain import CallAttempt, ChatOptions, ChatResult
from app.errors import DecisionError, InvariantError, ModelImagesRefusedError, ReplayMissError
from app.llm.fallback import FallbackChain
from app.llm.openai_compat import OpenAIChatModel
from app.ports import ChatModel, DecisionRequest, StrategyAnswer

log = logging.getLogger(__name__)

# The prompt asks for JSON; providers that can enforce it (DeepSeek) are told to.
DEFAULT_OPTIONS = ChatOptions(json_mode=True)


class LLMStrategy:
    """The `Strategy` port over a chat model: prompt in, parsed trade decisions out."""

    uses_prompt = True

    def __init__(
        self,
        name: str,
        chat_model: ChatModel,
        *,
        options: ChatOptions | None = None,
        wants_images: bool = False,
    ):
        self.name = name
        self.chat_model = chat_model
        self.options = options or DEFAULT_OPTIONS
        # A vision agent: the engine adds chart images to its prompt while this holds. A model
        # that refuses images turns it off for the rest of the run.
        self.wants_images = wants_images
        self._latest: tuple[DecisionRequest, list[CallAttempt]] | None = None
        # The options with the last budget, kept: every cycle of a run has the same budget.
        self._budgeted: tuple[ChatOptions, float, ChatOptions] | None = None

    def __repr__(self) -> str:
        return f"LLMStrategy(name={self.name!r}, chat_model={self.chat_model!r})"

    def attempts_made(self, request: DecisionRequest) -> tuple[CallAttempt, ...]:
        """Return the requests made so far for `request`, also after it was cancelled.

        Only the latest `decide` is tracked: for an older request this returns ().
        """
        if self._latest is None or self._latest[0] is not request:
            return ()
        return tuple(self._latest[1])

    async def decide(self, request: DecisionRequest) -> StrategyAnswer:
        """Ask the model with `request.messages` and parse its decisions for `request.coins`."""
        journal: list[CallAttempt] = []
        self._latest = (request, journal)
        if not request.messages:
            raise InvariantError(f"agent {self.name}: an LLM strategy needs the prompt messages")
        options = self._options_for(request.budget_s)
        try:
            result = await self._complete(request, options, journal)
        except ReplayMissError as error:
            at = request.at.isoformat()
            raise ReplayMissError(f"{error} (cycle at {at})", attempts=error.attempts) from error
        except ModelImagesRefusedError as error:
            # Recorded as this cycle's error; the next prompts are text only, for the whole run.
            self.wants_images = False
            log.warning("agent %s: %s; text-only from the next cycle on", self.name, error)
            raise ModelImagesRefusedError(
                f"{error} (agent {self.name} falls back to text-only prompts for the rest of "
                "the run)",
                attempts=error.attempts,
            ) from error
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

    def _options_for(self, budget_s: float | None) -> ChatOptions:
        if budget_s is None:
            return self.options
        kept = self._budgeted
        if kept is not None and kept[0] is self.options and kept[1] == budget_s:
            return kept[2]
        options = replace(self.options, budget_s=budget_s)
        self._budgeted = (self.options, budget_s, options)
        return options

    async def _complete(
        self, request: DecisionRequest, options: ChatOptions, journal: list[CallAttempt]
    ) -> ChatResult:
        if isinstance(self.chat_model, FallbackChain | OpenAIChatModel):
            return await self.chat_model.complete(request.messages, options, journal=journal)
        return await self.chat_model.complete(request.messages, options)
