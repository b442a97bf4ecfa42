"""A monotonic clock that moves only when told: deadlines and budgets checked without waiting."""

from __future__ import annotations

import threading


class FakeMonotonic:
    """Seconds on a fake monotonic clock (`time.monotonic`'s stand-in); `advance` moves it.

    Thread-safe: a fake server's thread may advance it while the test's event loop reads it.
    `sleep` is an async sleep that only moves the clock (and remembers what was asked).
    """

    def __init__(self, now: float = 1_000.0) -> None:
        self._now = now
        self._lock = threading.Lock()
        self.slept: list[float] = []

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock `seconds` forward."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        with self._lock:
            self._now += seconds

    async def sleep(self, seconds: float) -> None:
        """Sleep on this clock: no real time passes."""
        self.slept.append(seconds)
        self.advance(seconds)
