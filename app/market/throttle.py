"""A token bucket for ccxt requests that lets a snapshot's burst out at once, every cycle.

ccxt's own leaky bucket only refills while requests are queued, so time spent idle between
cycles is never credited: whatever burst allowance it is given is spent once, and every later
snapshot is serialised at `rateLimit` ms per request again. This bucket credits idle time up to
`capacity`, and otherwise keeps ccxt's rate and its per-endpoint costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    """Allow requests while tokens last; refill `refill_per_s` tokens a second, up to `capacity`.

    Time is an input (`clock` in monotonic seconds, and `sleep`): the refill arithmetic can be
    checked without waiting.
    """

    def __init__(
        self,
        *,
        capacity: float,
        refill_per_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if capacity <= 0 or refill_per_s <= 0:
            raise ValueError("capacity and refill rate must be positive")
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self.tokens = capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.refill_per_s)
        self._updated = now

    async def acquire(self, cost: float | None = 1.0) -> None:
        """Wait until `cost` tokens are available (first come, first served), then spend them."""
        cost = 1.0 if cost is None else float(cost)
        # The lock queues waiters in arrival order, so a stream of cheap requests cannot starve
        # an expensive one.
        async with self._lock:
            self._refill()
            # A request dearer than the whole bucket waits for a full bucket, then goes negative.
            needed = min(cost, self.capacity)
            while self.tokens < needed:
                await self._sleep((needed - self.tokens) / self.refill_per_s)
                self._refill()
            self.tokens -= cost
