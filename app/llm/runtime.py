"""What every agent's model calls share in one process: SDK clients, quota tracker, answer cache.

The composition root (`app.wiring`) builds one `LlmRuntime` per process and every agent's chat
model from it; `aclose()` flushes the cache's hit counts and closes the clients.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.domain import LlmMode
from app.llm.openai_compat import ClientPool
from app.llm.quota import QuotaTracker
from app.ports import AnswerCache, RecordedAnswers


@dataclass
class LlmRuntime:
    """Shared SDK clients (one per endpoint and key), quota tracker and answer cache."""

    clients: ClientPool
    quota: QuotaTracker
    cache: AnswerCache | None
    mode: LlmMode
    # The run whose own answers a replay gives back (`--replay-run`); None: the answer cache's.
    recorded: RecordedAnswers | None = None

    async def aclose(self) -> None:
        """Flush the cache's hit counts and close the SDK clients."""
        if self.cache is not None:
            self.cache.close()
        await self.clients.aclose()
